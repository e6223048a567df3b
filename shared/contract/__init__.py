"""The alert message contract: the typed message every source yields and the forwarder reads, and its
document on the alerts queue (``schemas/alert-message.v1.json``). Below ``defender/`` and ``alerting/``, so
that a source builds the typed alert and the forwarder parses the same types."""
