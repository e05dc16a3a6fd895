"""Runtime: the arq worker and its dial job, the pacer, the call tracker, the webhook receiver,
the metrics exporter and the ``dialer`` command line."""
