"""blkback: the backend of Xen's block interface (``io/blkif.h``) on an image file."""
