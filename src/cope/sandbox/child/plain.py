"""Plain data across the sandbox's process boundary: encoded by exact type, decoded as strictly.

Both processes of a run use it: the program's process encodes what its functions return (and
the arguments they changed), the judge's process encodes the arguments its tests pass and
decodes the values; cope's own process decodes probe values with it too (no iterators there).
An object with its own ``__eq__``, a subclass of ``int`` or ``str``, anything callable, is not
a value a test can be judged on, so it does not cross. Sent to the sandboxed interpreters as
text and run there (standard library only); cope imports it only to decode probe values.
Everything it uses is bound when it is defined, before any of the program runs.
"""


def _codec():
    _type, _len, _getattr, _str, _iter, _next = type, len, getattr, str, iter, next
    _bool, _int, _float, _list, _tuple, _dict, _set, _frozenset = (
        bool, int, float, list, tuple, dict, set, frozenset)
    _int_repr, _float_repr, _items, _isinstance = int.__repr__, float.__repr__, dict.items, isinstance
    _range, _ValueError, _TypeError = range, ValueError, TypeError
    empty = {}
    # Iterators of the builtin kinds (a generator, map, a dict's keys, ...) cross as the values
    # they yield, when a caller asks for it: a test may call list() on what a function returns.
    iterators = _frozenset(_type(x) for x in (
        (i for i in ()), _iter([]), _iter(()), _iter(""), _iter(_set()), _iter(empty), _iter(empty.values()),
        _iter(empty.items()), empty.keys(), empty.values(), empty.items(), map(id, ()), filter(None, ()),
        zip(), enumerate(()), reversed([]), _iter(_range(0)), _iter(b"")))

    def encode(v, left, depth=0, iterate=False):
        left[0] -= 1
        if left[0] < 0 or depth > 64:
            raise _ValueError("the value is too large to judge")
        t = _type(v)
        if v is None:
            return ["n", 0]
        if t is _bool:
            return ["b", 1 if v else 0]
        if t is _int:
            return ["i", _int_repr(v)]
        if t is _float:
            return ["f", _float_repr(v)]
        if t is _str:
            left[0] -= _len(v) // 64
            return ["s", v]
        if t is _list or t is _tuple or t is _set or t is _frozenset:
            tag = "l" if t is _list else "t" if t is _tuple else "S" if t is _set else "F"
            return [tag, [encode(x, left, depth + 1) for x in v]]
        if t is _dict:
            return ["d", [[encode(k, left, depth + 1), encode(x, left, depth + 1)] for k, x in _items(v)]]
        if iterate and (t in iterators or t is _range):
            out = []
            it = _iter(v)
            while True:
                try:
                    x = _next(it)
                except StopIteration:
                    break
                out.append(encode(x, left, depth + 1))
            return ["I", out]
        if _str(_getattr(t, "__module__", "")).split(".")[0] == "numpy":
            # a NumPy scalar or array compares as its plain value; whatever .tolist() returns is
            # encoded as strictly again, so a class that only claims to be NumPy gains nothing
            conv = _getattr(v, "tolist", None) or _getattr(v, "item", None)
            if conv is not None:
                return encode(conv(), left, depth + 1)
        raise _TypeError("the value is not plain data (None, bool, int, float, str, list, tuple, set, dict)")

    def decode(x, depth=0, iterate=True):
        if depth > 70 or not _isinstance(x, _list) or _len(x) != 2 or not _isinstance(x[0], _str):
            raise _ValueError("malformed value")
        tag, v = x
        if tag == "n":
            return None
        if tag == "b" and v in (0, 1):
            return _bool(v)
        if tag == "i" and _type(v) is _str:
            return _int(v)
        if tag == "f" and _type(v) is _str:
            return _float(v)
        if tag == "s" and _type(v) is _str:
            return v
        if tag in ("l", "t", "S", "F", "I") and _type(v) is _list and (iterate or tag != "I"):
            items = [decode(e, depth + 1, iterate) for e in v]
            if tag == "I":
                return _iter(items)
            return {"l": _list, "t": _tuple, "S": _set, "F": _frozenset}[tag](items)
        if tag == "d" and _type(v) is _list:
            out = {}
            for pair in v:
                if _type(pair) is not _list or _len(pair) != 2:
                    raise _ValueError("malformed value")
                out[decode(pair[0], depth + 1, iterate)] = decode(pair[1], depth + 1, iterate)
            return out
        raise _ValueError("malformed value")

    return encode, decode


def _channel(fd_in, fd_out, cap):
    """(send, recv) of JSON messages on a pair of pipes: an 8-byte length, then the message.

    ``recv`` returns None at end of stream (the other process ended) and refuses a message
    longer than ``cap`` bytes; both are bound now, so a program that patches ``json`` or ``os``
    afterwards changes nothing here.
    """
    import json, os
    _read, _write, _dumps, _loads, _len, _bytes = os.read, os.write, json.dumps, json.loads, len, bytes
    _from, _to, _ValueError = int.from_bytes, int.to_bytes, ValueError

    def send(msg):
        data = _dumps(msg).encode("utf-8")
        data = _to(_len(data), 8, "big") + data
        view = memoryview(data)
        while view:
            n = _write(fd_out, view)
            view = view[n:]

    def read(n):
        chunks, got = [], 0
        while got < n:
            b = _read(fd_in, min(n - got, 1 << 20))
            if not b:
                return None
            chunks.append(b)
            got += _len(b)
        return b"".join(chunks)

    def recv():
        head = read(8)
        if head is None:
            return None
        n = _from(head, "big")
        if n > cap:
            raise _ValueError("a message of %d bytes is over the limit of %d" % (n, cap))
        body = read(n)
        if body is None:
            return None
        return _loads(_bytes(body).decode("utf-8"))

    return send, recv
