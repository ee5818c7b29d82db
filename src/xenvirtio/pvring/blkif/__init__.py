"""blkif (``io/blkif.h``) without I/O: ring codecs, request parsing and validation."""
