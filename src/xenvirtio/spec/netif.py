"""Xen's network interface, ``xen/include/public/io/netif.h``: constants, wire layouts
and XenStore key names.

Two rings per queue, each one page of 256 entries: the transmit ring (``netif_tx``:
12-byte slots holding a ``netif_tx_request`` or a ``netif_extra_info``; 4-byte
responses) and the receive ring (``netif_rx``: 8-byte requests; 8-byte slots holding a
``netif_rx_response`` or a ``netif_extra_info``).
"""

from __future__ import annotations

import struct
from typing import Final

XEN_PAGE_SIZE: Final = 4096
XEN_NETIF_NR_SLOTS_MIN: Final = 18  # data slots a backend must accept for one packet
XEN_NETIF_MAX_TX_SIZE: Final = 0xFFFF
ETH_HLEN: Final = 14
VLAN_HLEN: Final = 4

# --- transmit flags (NETTXF_*) -------------------------------------------------------
NETTXF_csum_blank: Final = 1 << 0  # checksum field holds the pseudo-header sum only
NETTXF_data_validated: Final = 1 << 1
NETTXF_more_data: Final = 1 << 2  # the packet continues in the next request
NETTXF_extra_info: Final = 1 << 3  # netif_extra_info slot(s) follow this request

# --- receive flags (NETRXF_*) --------------------------------------------------------
NETRXF_data_validated: Final = 1 << 0
NETRXF_csum_blank: Final = 1 << 1
NETRXF_more_data: Final = 1 << 2
NETRXF_extra_info: Final = 1 << 3
NETRXF_gso_prefix: Final = 1 << 4  # deprecated

# --- extra info (XEN_NETIF_EXTRA_*) --------------------------------------------------
XEN_NETIF_EXTRA_TYPE_NONE: Final = 0  # never valid
XEN_NETIF_EXTRA_TYPE_GSO: Final = 1
XEN_NETIF_EXTRA_TYPE_MCAST_ADD: Final = 2
XEN_NETIF_EXTRA_TYPE_MCAST_DEL: Final = 3
XEN_NETIF_EXTRA_TYPE_HASH: Final = 4
XEN_NETIF_EXTRA_TYPE_MAX: Final = 5
XEN_NETIF_EXTRA_FLAG_MORE: Final = 1 << 0

XEN_NETIF_GSO_TYPE_NONE: Final = 0
XEN_NETIF_GSO_TYPE_TCPV4: Final = 1
XEN_NETIF_GSO_TYPE_TCPV6: Final = 2

# --- response status (NETIF_RSP_*) ---------------------------------------------------
NETIF_RSP_DROPPED: Final = -2
NETIF_RSP_ERROR: Final = -1
NETIF_RSP_OKAY: Final = 0
NETIF_RSP_NULL: Final = 1  # the response slot of an extra-info request

# --- layouts (x86_64; every field little-endian) -------------------------------------
# struct netif_tx_request { grant_ref_t gref; uint16_t offset, flags, id, size; }
TX_REQUEST: Final = struct.Struct("<IHHHH")
# struct netif_tx_response { uint16_t id; int16_t status; }
TX_RESPONSE: Final = struct.Struct("<Hh")
# struct netif_rx_request { uint16_t id; uint16_t pad; grant_ref_t gref; }
RX_REQUEST: Final = struct.Struct("<HxxI")
# struct netif_rx_response { uint16_t id, offset, flags; int16_t status; }
RX_RESPONSE: Final = struct.Struct("<HHHh")
# struct netif_extra_info { uint8_t type, flags; union u (6 bytes) }
EXTRA_INFO: Final = struct.Struct("<BB6s")
# u.gso { uint16_t size; uint8_t type; uint8_t pad; uint16_t features; }
EXTRA_GSO: Final = struct.Struct("<HBxH")

TX_SLOT_SIZE: Final = 12  # union of request (12) and response (4), 4-aligned
RX_SLOT_SIZE: Final = 8
assert TX_REQUEST.size == TX_SLOT_SIZE and RX_RESPONSE.size == RX_SLOT_SIZE
assert EXTRA_INFO.size == 8 and EXTRA_GSO.size == 6

# --- XenStore keys (netif.h "Feature and Parameter Negotiation") ---------------------
KEY_MAC: Final = "mac"
KEY_HANDLE: Final = "handle"
KEY_FEATURE_SG: Final = "feature-sg"
KEY_FEATURE_GSO_TCPV4: Final = "feature-gso-tcpv4"
KEY_FEATURE_GSO_TCPV6: Final = "feature-gso-tcpv6"
KEY_FEATURE_RX_COPY: Final = "feature-rx-copy"
KEY_FEATURE_RX_FLIP: Final = "feature-rx-flip"
KEY_FEATURE_RX_NOTIFY: Final = "feature-rx-notify"
KEY_FEATURE_NO_CSUM_OFFLOAD: Final = "feature-no-csum-offload"
KEY_FEATURE_IPV6_CSUM_OFFLOAD: Final = "feature-ipv6-csum-offload"
KEY_FEATURE_SPLIT_EVENT_CHANNELS: Final = "feature-split-event-channels"
KEY_FEATURE_MULTICAST_CONTROL: Final = "feature-multicast-control"
KEY_REQUEST_MULTICAST_CONTROL: Final = "request-multicast-control"
KEY_MULTI_QUEUE_MAX_QUEUES: Final = "multi-queue-max-queues"
KEY_MULTI_QUEUE_NUM_QUEUES: Final = "multi-queue-num-queues"
KEY_TX_RING_REF: Final = "tx-ring-ref"
KEY_RX_RING_REF: Final = "rx-ring-ref"
KEY_EVENT_CHANNEL: Final = "event-channel"
KEY_EVENT_CHANNEL_TX: Final = "event-channel-tx"
KEY_EVENT_CHANNEL_RX: Final = "event-channel-rx"
KEY_REQUEST_RX_COPY: Final = "request-rx-copy"
