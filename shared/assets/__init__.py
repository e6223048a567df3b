"""What the CMDB knows of each Defender device, findable by what an alert carries, without asking ServiceNow.

The device sync writes it (:mod:`shared.assets.index`) as ServiceNow confirms each CI; the forwarder reads it
when it writes a new record, so the record names the CI its alert concerns and says what the asset is and
what it is vulnerable to. It sits below both, which may not import each other.
"""
