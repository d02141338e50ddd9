//! On-disk metadata: layout, superblock, generation identifiers, bitmap, activity log; written next.
