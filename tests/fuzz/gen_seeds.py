#!/usr/bin/env python3
"""gen_seeds.py - write the seed corpus of the fuzz targets (corpus/NAME/).

The seeds are small hand-made inputs that reach each part of a target's
decoder; libFuzzer grows the rest from them.  Run it from anywhere; it
rewrites the corpus directories next to it.  See fuzz_ops.c, fuzz_image.c
and fuzz_nsctl.c for the input formats.
"""
import os
import random
import struct

here = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- fuzz_ops: opcode byte (mod 28) then its arguments -------------------
GET, GET_EX, EXISTS, STAT, TTL, SET, SET_EX, ADD, REPLACE, CAS, GETSET, \
    INCR, DECR, DEL, EXPIRE, PERSIST, TOUCH, MGET, MSET, MDEL, UPDATE, \
    GET_OR_SET, CLOCK, CLOCK_TO, SPACE = (0, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12,
                                          13, 14, 15, 16, 17, 18, 19, 20, 21,
                                          22, 23, 24, 26, 27)


def ops(*parts):
    return bytes(b for p in parts for b in p)


write("fuzz_ops", "set-get", ops([SET, 0, 3, 7, 0, 10], [GET, 0, 0],
                                  [GET_EX, 0, 0], [DEL, 0], [GET, 0, 0]))
write("fuzz_ops", "ttl-expiry", ops([SET, 1, 2, 9, 3], [TTL, 1], [CLOCK, 3],
                                     [GET, 1, 0], [CLOCK_TO, 1, 0], [EXISTS, 1],
                                     [TOUCH, 1], [PERSIST, 1], [TTL, 1]))
write("fuzz_ops", "big-values", ops([SET_EX, 7, 9, 1, 0, 5], [GET, 7, 0],
                                     [SET, 6, 10, 2, 0], [SET, 0x85, 8, 3, 1],
                                     [GETSET, 0x85, 1, 4, 0, 250], [STAT, 0x85]))
write("fuzz_ops", "counters", ops([INCR, 2, 0, 5, 0, 0], [INCR, 2, 0, 1, 0, 0],
                                   [DECR, 2, 4, 0, 0], [SET, 3, 11, 9, 0],
                                   [INCR, 3, 0, 1, 1, 0], [INCR, 3, 12, 0, 0, 0]))
write("fuzz_ops", "conditional", ops([ADD, 4, 1, 1, 0], [ADD, 4, 1, 2, 0],
                                      [REPLACE, 5, 1, 1, 0], [CAS, 4, 2, 2, 0, 2],
                                      [CAS, 4, 2, 2, 0, 1], [STAT, 4],
                                      [UPDATE, 4, 0, 3, 9, 0, 7], [UPDATE, 4, 1, 0, 0, 0, 0]))
write("fuzz_ops", "batches", ops([MSET, 3, 0, 1, 1, 0, 1, 1, 2, 2, 0, 2, 0x82, 3, 3, 0, 3],
                                  [MGET, 4, 0, 0, 1, 0, 8, 0, 9, 0],
                                  [MDEL, 2, 0, 0x81]))
write("fuzz_ops", "spaces", ops([SPACE, 0, 5], [SET, 0, 1, 1, 0], [TTL, 0],
                                 [SPACE, 2], [GET, 0, 0], [GET_OR_SET, 0, 200, 2, 3, 0, 0, 0],
                                 [GET_OR_SET, 1, 3, 1, 1, 0, 0, 0]))
write("fuzz_ops", "bad-keys", ops([SET, 8, 1, 1, 0], [SET, 9, 1, 1, 0], [GET, 8, 0],
                                   [DEL, 9], [MGET, 2, 8, 0, 9, 0]))
rnd = random.Random(7)
write("fuzz_ops", "random", bytes(rnd.randrange(256) for _ in range(300)))

# ---- fuzz_image: mode byte, then patches ---------------------------------
write("fuzz_image", "template-rw", b"\x00")
write("fuzz_image", "template-ro", b"\x01")
# header: bytes at offset 0 (magic), a word over nbuckets (offset 56)
write("fuzz_image", "header-magic", b"\x00" + bytes([0x00]) + struct.pack("<H", 0) + b"\x00\x41")
write("fuzz_image", "header-word", b"\x00" + bytes([0x40]) + struct.pack("<H", 56) + b"\x03")
# an index bucket word, an overflow link, a class size, a page's class
write("fuzz_image", "bucket-word", b"\x00" + bytes([0x45]) + struct.pack("<H", 72) + b"\x08")
write("fuzz_image", "over-link", b"\x00" + bytes([0xa5]) + struct.pack("<H", 4) + b"\x12\x01")
write("fuzz_image", "class-size", b"\x01" + bytes([0xa3]) + struct.pack("<H", 8) + b"\x00\x05")
write("fuzz_image", "page-class", b"\x00" + bytes([0xa4]) + struct.pack("<H", 0) + b"\x17\x00")
write("fuzz_image", "slot-retire", b"\x00" + bytes([0x41]) + struct.pack("<H", 160) + b"\x0a")
write("fuzz_image", "item-klen", b"\x00" + bytes([0x07]) + struct.pack("<H", 36) + b"\x01\xff")
write("fuzz_image", "resize", b"\x00\xff\x01\x00")
write("fuzz_image", "raw", b"R" + b"NNSESHM1" + bytes(200))

# ---- fuzz_nsctl: arguments split by NUL, '@' our segment, 0x01 stdin ------
def args(*a, stdin=None):
    b = b"\0".join(x.encode() if isinstance(x, str) else x for x in a)
    return b + (b"\x01" + stdin if stdin is not None else b"")


for name, data in {
    "info": args("info", "@"),
    "info-json": args("info", "@", "--json"),
    "stats": args("stats", "@", "--space", "fz:a", "--json"),
    "clients": args("clients", "@"),
    "spaces": args("spaces", "@", "--json"),
    "keys": args("keys", "@", "fz:a", "[a-k]*"),
    "get": args("get", "@", "fz:a", "k", "--json"),
    "set-stdin": args("set", "@", "fz:a", "new", "--ttl", "0x10", "--flags", "7", stdin=b"\0\xffbytes"),
    "set-value": args("set", "@", "fz:a", "--", "-k", "-v", "--ttl", "never"),
    "ttl": args("ttl", "@", "fz:a", "t"),
    "expire": args("expire", "@", "fz:a", "k", "100"),
    "del": args("del", "@", "fz:a", "k"),
    "clear": args("clear", "@", "fz:a"),
    "verify": args("verify", "@", "--json"),
    "create-parse": args("create", "x", "--size", "64MiB", "--items", "1k", "--mode", "0660"),
    "watch-parse": args("stats", "@", "--watch", "0.5"),
    "help": args("help", "set"),
    "cmd-help": args("get", "--help"),
    "version": args("--version"),
    "bad-option": args("info", "@", "--size"),
}.items():
    write("fuzz_nsctl", name, data)
