"""Everything lmbench keeps on disk: result tables, tensor files, the pre-training cache, their
checksums and locks, and the one module that names where each lives (``layout``)."""
