"""A domain kernel given as a module: exits with the code on its command line, plus its
domid, so a test sees that it ran as ``__main__`` inside the right domain."""

import sys

from xenvirtio.hv.emu.guest import current_guest

if __name__ == "__main__":
    sys.exit(int(sys.argv[1]) + current_guest().domid)
