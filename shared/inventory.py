"""Device inventory sync: management console → ServiceNow CMDB (device-sync issue)."""


def run_scheduled_sync(*, past_due: bool) -> None:
    """Run the device sync if it is enabled and due.

    Not built yet: the device-sync issue implements the console client, mapping and delta state.
    """
    raise NotImplementedError("device sync is not implemented yet; nothing was read or written")
