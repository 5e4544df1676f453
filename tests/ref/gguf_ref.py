"""Independent GGUF reader (v2/v3, little-endian) for the numerics reference.

Written from the published GGUF format (ggml docs/gguf.md), not from Locus's C
reader, so that the two can check each other.  Standard library + numpy only;
runs on Debian's /usr/bin/python3.

File layout (all integers little-endian):
    u32  magic        "GGUF" (bytes 47 47 55 46)
    u32  version      2 or 3 (v1 used u32 counts and is rejected here)
    u64  n_tensors
    u64  n_kv
    n_kv times:  string key, u32 value_type, value
    n_tensors times:  string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type,
                      u64 offset (relative to the start of the data section,
                      a multiple of the alignment)
    padding to `general.alignment` (u32 metadata key, default 32)
    data section
  string = u64 length + UTF-8 bytes (no NUL)
  array  = u32 element_type, u64 count, elements (arrays of arrays allowed)

Tensor data is exposed as read-only numpy views of a memmap of the file.
"""

import struct
import sys

import numpy as np

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# Metadata value types.
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, \
    T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(13)

# type id -> (struct format, numpy dtype) for fixed-size scalars.
_SCALAR = {
    T_UINT8: ("<B", np.uint8),
    T_INT8: ("<b", np.int8),
    T_UINT16: ("<H", np.uint16),
    T_INT16: ("<h", np.int16),
    T_UINT32: ("<I", np.uint32),
    T_INT32: ("<i", np.int32),
    T_FLOAT32: ("<f", np.float32),
    T_BOOL: ("<?", np.bool_),
    T_UINT64: ("<Q", np.uint64),
    T_INT64: ("<q", np.int64),
    T_FLOAT64: ("<d", np.float64),
}


class GGUFError(Exception):
    pass


class TensorInfo:
    """One tensor: name, ne (innermost first, as in GGML), ggml type, and its
    absolute byte range in the file."""

    def __init__(self, name, ne, ggml_type, rel_offset):
        self.name = name
        self.ne = list(ne)
        self.ggml_type = ggml_type
        self.rel_offset = rel_offset
        self.abs_offset = None  # set once the data section start is known
        self.nbytes = None

    @property
    def n_elements(self):
        n = 1
        for d in self.ne:
            n *= d
        return n

    def __repr__(self):
        return "TensorInfo(%s, ne=%s, type=%d, off=%d)" % (
            self.name, self.ne, self.ggml_type, self.rel_offset)


class _Cursor:
    """Bounds-checked sequential reader over a bytes-like object."""

    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def take(self, n):
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError("truncated file at offset %d (need %d bytes)" % (self.pos, n))
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))[0]

    def string(self):
        n = self.unpack("<Q")
        return bytes(self.take(n)).decode("utf-8", errors="replace")

    def value(self, vtype, depth=0):
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype][0])
        if vtype == T_STRING:
            return self.string()
        if vtype == T_ARRAY:
            if depth > 8:
                raise GGUFError("arrays nested too deeply")
            etype = self.unpack("<I")
            count = self.unpack("<Q")
            if etype in _SCALAR:
                fmt, dt = _SCALAR[etype]
                size = struct.calcsize(fmt)
                raw = self.take(count * size)
                return np.frombuffer(bytes(raw), dtype=np.dtype(dt).newbyteorder("<")).copy()
            return [self.value(etype, depth + 1) for _ in range(count)]
        raise GGUFError("unknown metadata value type %d at offset %d" % (vtype, self.pos))


class GGUFFile:
    """Parsed GGUF file.  Attributes: version, metadata (dict, insertion
    ordered; numeric arrays are numpy arrays, string arrays are lists),
    tensors (dict name -> TensorInfo, in file order), alignment, data_offset."""

    def __init__(self, path):
        from quants_ref import type_nbytes  # local import: keeps modules independent

        self.path = path
        self.mm = np.memmap(path, dtype=np.uint8, mode="r")
        # A memoryview over the memmap so the header parse does not copy the file.
        cur = _Cursor(memoryview(self.mm))
        magic = bytes(cur.take(4))
        if magic != GGUF_MAGIC:
            raise GGUFError("%s: bad magic %r (not a GGUF file)" % (path, magic))
        self.version = cur.unpack("<I")
        if self.version not in (2, 3):
            if self.version & 0xFFFF == 0 and self.version != 0:
                raise GGUFError("big-endian GGUF is not supported")
            raise GGUFError("unsupported GGUF version %d" % self.version)
        n_tensors = cur.unpack("<Q")
        n_kv = cur.unpack("<Q")

        self.metadata = {}
        self.metadata_types = {}
        for _ in range(n_kv):
            key = cur.string()
            vtype = cur.unpack("<I")
            self.metadata[key] = cur.value(vtype)
            self.metadata_types[key] = vtype

        self.tensors = {}
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.unpack("<I")
            if n_dims > 4:
                raise GGUFError("tensor %s: n_dims %d > 4" % (name, n_dims))
            ne = [cur.unpack("<Q") for _ in range(n_dims)]
            ttype = cur.unpack("<I")
            off = cur.unpack("<Q")
            if name in self.tensors:
                raise GGUFError("duplicate tensor name %s" % name)
            self.tensors[name] = TensorInfo(name, ne, ttype, off)

        self.alignment = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        if self.alignment <= 0 or self.alignment & (self.alignment - 1):
            raise GGUFError("general.alignment %d is not a power of two" % self.alignment)
        a = self.alignment
        self.data_offset = (cur.pos + a - 1) // a * a

        for t in self.tensors.values():
            if t.rel_offset % a:
                raise GGUFError("tensor %s: offset %d not aligned to %d" % (t.name, t.rel_offset, a))
            t.abs_offset = self.data_offset + t.rel_offset
            t.nbytes = type_nbytes(t.ggml_type, t.ne)
            if t.abs_offset + t.nbytes > len(self.mm):
                raise GGUFError("tensor %s: data [%d, %d) past end of file (%d bytes)" % (
                    t.name, t.abs_offset, t.abs_offset + t.nbytes, len(self.mm)))

    def get(self, key, default=None):
        return self.metadata.get(key, default)

    def raw(self, name):
        """Read-only uint8 view of a tensor's bytes."""
        t = self.tensors[name]
        return self.mm[t.abs_offset:t.abs_offset + t.nbytes]

    def tensor(self, name):
        """Dequantized tensor as float32 numpy array shaped ne reversed
        (so a 2-D weight ne=[n_in, n_out] becomes (n_out, n_in))."""
        from quants_ref import dequantize

        t = self.tensors[name]
        flat = dequantize(self.raw(name), t.ggml_type, t.n_elements)
        return flat.reshape(list(reversed(t.ne)) if t.ne else [])


def _describe(v):
    if isinstance(v, np.ndarray):
        head = ", ".join(repr(x) for x in v[:5].tolist())
        return "[%s%s] (%d x %s)" % (head, ", ..." if len(v) > 5 else "", len(v), v.dtype)
    if isinstance(v, list):
        head = ", ".join(repr(x) for x in v[:5])
        return "[%s%s] (%d)" % (head, ", ..." if len(v) > 5 else "", len(v))
    return repr(v)


def main(argv):
    """Dump a GGUF file's header: python3 gguf_ref.py FILE.gguf"""
    from quants_ref import type_name

    if len(argv) != 2:
        print("usage: gguf_ref.py FILE.gguf", file=sys.stderr)
        return 2
    g = GGUFFile(argv[1])
    print("version %d, %d kv, %d tensors, alignment %d, data at %d" % (
        g.version, len(g.metadata), len(g.tensors), g.alignment, g.data_offset))
    for k, v in g.metadata.items():
        print("  %-50s %s" % (k, _describe(v)))
    for t in g.tensors.values():
        print("  %-40s %-6s ne=%s off=%d" % (t.name, type_name(t.ggml_type), t.ne, t.abs_offset))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
