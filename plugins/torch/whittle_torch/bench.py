"""whittle bench --backend torch (not yet implemented)."""


def available():
    return False


def run(eng, req):
    from .server import unsupported
    raise unsupported("bench")
