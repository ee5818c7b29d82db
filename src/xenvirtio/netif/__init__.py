"""Host networking at the edge: TAP devices (``/dev/net/tun`` ioctls), network namespaces
and links (rtnetlink through pyroute2). Device models and guest drivers reach the Linux
network stack only through here. See ``docs/virtio-net.md``."""

from xenvirtio.netif.netlink import LinkInfo, Netlink, create_netns, netns_exists, remove_netns
from xenvirtio.netif.netns import run_in_netns
from xenvirtio.netif.tap import Tap, TapError

__all__ = [
    "LinkInfo",
    "Netlink",
    "Tap",
    "TapError",
    "create_netns",
    "netns_exists",
    "remove_netns",
    "run_in_netns",
]
