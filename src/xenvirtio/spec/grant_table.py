"""Grant table constants and the ``grant_entry_v1`` layout, from Xen's ``grant_table.h``.

Names and numbers only. A v1 grant table is an array of 8-byte entries the granting
domain writes and Xen reads (and updates: ``GTF_reading`` / ``GTF_writing``).
"""

from __future__ import annotations

import struct
from typing import Final

XEN_PAGE_SIZE: Final = 4096

# struct grant_entry_v1 { uint16_t flags; domid_t domid; uint32_t frame; }
GRANT_ENTRY_V1: Final = struct.Struct("<HHI")
GRANT_ENTRY_V1_FLAGS_OFFSET: Final = 0
GRANT_ENTRIES_PER_FRAME_V1: Final = XEN_PAGE_SIZE // GRANT_ENTRY_V1.size

# Type of a grant entry (flags & GTF_type_mask).
GTF_invalid: Final = 0 << 0
GTF_permit_access: Final = 1 << 0
GTF_accept_transfer: Final = 2 << 0
GTF_transitive: Final = 3 << 0
GTF_type_mask: Final = 3 << 0

# Subflags of GTF_permit_access: [GST] set by the guest, [XEN] set by the hypervisor.
GTF_readonly: Final = 1 << 2  # [GST] read-only mappings and accesses only
GTF_reading: Final = 1 << 3  # [XEN] currently mapped for reading
GTF_writing: Final = 1 << 4  # [XEN] currently mapped for writing
GTF_PWT: Final = 1 << 5
GTF_PCD: Final = 1 << 6
GTF_PAT: Final = 1 << 7
GTF_sub_page: Final = 1 << 8

# Grant references Linux keeps for the toolstack (include/xen/grant_table.h).
GNTTAB_RESERVED_CONSOLE: Final = 0
GNTTAB_RESERVED_XENSTORE: Final = 1
GNTTAB_NR_RESERVED_ENTRIES: Final = 8

# GNTTABOP_copy flags.
GNTCOPY_source_gref: Final = 1 << 0
GNTCOPY_dest_gref: Final = 1 << 1

# Status codes of grant table operations (GNTST_*).
GNTST_okay: Final = 0
GNTST_general_error: Final = -1
GNTST_bad_domain: Final = -2
GNTST_bad_gntref: Final = -3
GNTST_bad_handle: Final = -4
GNTST_bad_virt_addr: Final = -5
GNTST_bad_dev_addr: Final = -6
GNTST_no_device_space: Final = -7
GNTST_permission_denied: Final = -8
GNTST_bad_page: Final = -9
GNTST_bad_copy_arg: Final = -10
GNTST_address_too_big: Final = -11
GNTST_eagain: Final = -12
GNTST_no_space: Final = -13

# gntalloc unmap notification (xen/gntalloc.h, xen/gntdev.h).
UNMAP_NOTIFY_CLEAR_BYTE: Final = 0x1
UNMAP_NOTIFY_SEND_EVENT: Final = 0x2

# Resource types for XENMEM_acquire_resource (memory.h).
XENMEM_resource_ioreq_server: Final = 0
XENMEM_resource_grant_table: Final = 1
