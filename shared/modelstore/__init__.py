"""Many models: packages in a blob container, served on demand by a bounded working set.

``blobstore`` (listing, verified download, push), ``policy`` (which models and versions),
``index`` (the cached servable listing), ``diskcache`` (verified local copies),
``workingset`` (LRU + leases + single flight), ``memory`` (measured sizes), ``plane``
(the on-demand data plane), ``runtime`` (built from settings), ``cli`` (``scorefn models``).
"""
