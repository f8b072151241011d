"""go-plugin's handshake and gRPC services for a plugin not written in Go.

whittle's host (core/plugin) starts plugins with HashiCorp go-plugin. For a
non-Go plugin go-plugin documents what it expects
(https://github.com/hashicorp/go-plugin/blob/main/docs/guide-plugin-write-non-go.md):

- the magic cookie in the environment (WHITTLE_PLUGIN_MAGIC_COOKIE), or the
  binary was run by hand;
- one handshake line on stdout:
  CORE-PROTOCOL-VERSION|APP-PROTOCOL-VERSION|NETWORK-TYPE|NETWORK-ADDR|PROTOCOL
  plus, with AutoMTLS (the host sets PLUGIN_CLIENT_CERT), the plugin's own
  certificate, base64 (unpadded) DER, as a sixth field;
- the gRPC health service answering SERVING for service "plugin" (the host
  also health-checks a running plugin every few seconds);
- go-plugin's own services: GRPCController.Shutdown, GRPCStdio.StreamStdio and
  GRPCBroker.StartStream (the broker is only used by pass plugins calling
  back into the host; a backend never dials it, so it is served as an idle
  stream).

whittle adds: a stdin pipe the host never writes (WHITTLE_PLUGIN_HOST_STDIN=1):
end-of-file there means whittle is gone and the plugin exits.

The whittle services (Plugin, Backend) carry JSON payloads; their bindings are
written here with generic handlers over the protoc-generated messages.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent import futures

import grpc

from .gen.whittle.plugin.v1 import backend_pb2 as bpb
from .gen.whittle.plugin.v1 import plugin_pb2 as ppb

CORE_PROTOCOL_VERSION = 1
# whittle's plugin protocol version (core/plugin/wire.ProtocolVersion).
PROTOCOL_VERSION = 1
MAGIC_COOKIE_KEY = "WHITTLE_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "whittle-plugin-7d3f0c5e9b2a4e61"
HOST_STDIN_ENV = "WHITTLE_PLUGIN_HOST_STDIN"

_stderr = sys.stderr
_log_lock = threading.Lock()


def log(level, msg, **attrs):
    """Writes one hclog JSON line to stderr, which go-plugin forwards into
    whittle's log with its level and attributes."""
    entry = {"@level": level, "@message": msg, "@module": "torch",
             "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())}
    for k, v in attrs.items():
        entry[k] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    with _log_lock:
        try:
            _stderr.write(json.dumps(entry) + "\n")
            _stderr.flush()
        except (OSError, ValueError):
            pass


class RemoteError(Exception):
    """An error with the gRPC status code the host maps back to a sentinel
    (core/plugin/wire.ToStatus): UNIMPLEMENTED is backend.ErrUnsupported."""

    def __init__(self, msg, code=grpc.StatusCode.UNKNOWN):
        super().__init__(msg)
        self.code = code


def unsupported(msg):
    return RemoteError(msg + ": not supported by this backend", grpc.StatusCode.UNIMPLEMENTED)


class Cancelled(Exception):
    pass


def _identity(b):
    return b


# --- go-plugin's internal services, by hand: their messages are trivial.

def _health_check(request, context):
    # HealthCheckResponse{status: SERVING (1)}
    return b"\x08\x01"


def _health_watch(request, context):
    yield b"\x08\x01"
    while context.is_active():
        time.sleep(1)


def _stdio(request, context):
    # Nothing is relayed: the plugin writes its logs to stderr, which
    # go-plugin reads directly. The stream stays open until the host closes
    # it.
    while context.is_active():
        time.sleep(1)
    return
    yield  # pragma: no cover - makes this a generator


def _broker(request_iterator, context):
    for _ in request_iterator:
        pass
    return
    yield  # pragma: no cover


class _Describe:
    def __init__(self, name, version, backend):
        self.name, self.version, self.backend = name, version, backend

    def __call__(self, request, context):
        return ppb.DescribeResponse(name=self.name, version=self.version, protocol_version=PROTOCOL_VERSION,
                                    sdk_version="python", backend=self.backend)


def _unary(fn, req_cls, resp_cls):
    return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=req_cls.FromString,
                                               response_serializer=resp_cls.SerializeToString)


class BackendService:
    """The Backend service: decodes the JSON requests and calls the backend
    object's methods (open, info, load, save, release, stats, evaluate,
    train, generate, bench, close)."""

    def __init__(self, open_fn):
        self.open_fn = open_fn
        self.b = None
        self.lock = threading.Lock()

    def _get(self, context):
        if self.b is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the backend was not opened (Open must come first)")
        return self.b

    def _call(self, context, what, fn):
        try:
            return fn()
        except RemoteError as e:
            context.abort(e.code, str(e))
        except Cancelled:
            context.abort(grpc.StatusCode.CANCELLED, "context canceled")
        except Exception as e:  # every failure reaches the host as an error naming it
            log("debug", "call failed", op=what, trace=traceback.format_exc())
            context.abort(grpc.StatusCode.UNKNOWN, "torch: %s: %s" % (what, e))

    @staticmethod
    def _decode(context, what, data):
        try:
            return json.loads(data or b"{}")
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "decoding the %s: %s" % (what, e))

    @staticmethod
    def _encode(v):
        # json.dumps writes NaN as NaN, which Go refuses; say so instead.
        return json.dumps(v, allow_nan=False).encode()

    def Open(self, req, context):
        with self.lock:
            if self.b is not None:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the backend is already open")
            cfg = self._decode(context, "backend attributes", req.config_json)
            self.b = self._call(context, "open", lambda: self.open_fn(cfg))
        return bpb.OpenResponse()

    def Info(self, req, context):
        b = self._get(context)
        return bpb.InfoResponse(info_json=self._encode(self._call(context, "info", b.info)))

    def Load(self, req, context):
        b = self._get(context)
        r = self._decode(context, "Load request", req.request_json)
        return bpb.LoadResponse(model=self._call(context, "load", lambda: b.load(r)))

    def Save(self, req, context):
        b = self._get(context)
        r = self._decode(context, "Save request", req.request_json)
        self._call(context, "save", lambda: b.save(r))
        return bpb.SaveResponse()

    def Release(self, req, context):
        b = self._get(context)
        self._call(context, "release", lambda: b.release(req.model))
        return bpb.ReleaseResponse()

    def Stats(self, req, context):
        b = self._get(context)
        r = self._decode(context, "Stats request", req.request_json)
        return bpb.StatsResponse(result_json=self._encode(self._call(context, "stats", lambda: b.stats(r))))

    def Evaluate(self, req, context):
        b = self._get(context)
        r = self._decode(context, "Evaluate request", req.request_json)
        return bpb.EvaluateResponse(result_json=self._encode(self._call(context, "evaluate", lambda: b.evaluate(r))))

    def Generate(self, req, context):
        b = self._get(context)
        r = self._decode(context, "Generate request", req.request_json)
        return bpb.GenerateResponse(result_json=self._encode(self._call(context, "generate", lambda: b.generate(r))))

    def Bench(self, req, context):
        b = self._get(context)
        r = self._decode(context, "Bench request", req.request_json)
        return bpb.BenchResponse(result_json=self._encode(self._call(context, "bench", lambda: b.bench(r))))

    def Train(self, req, context):
        """Streams one message per event, then the result. Events are
        produced on this thread between optimizer steps; a host that
        cancels the stream makes the next step boundary stop the run."""
        b = self._get(context)
        r = self._decode(context, "Train request", req.request_json)
        out = []
        done = threading.Event()
        box = {}

        def events(ev):
            out.append(bpb.TrainMessage(event_json=self._encode(ev)))

        def cancelled():
            return not context.is_active()

        def run():
            try:
                box["result"] = b.train(r, events, cancelled)
            except BaseException as e:  # handed to the stream below
                box["error"] = e
            finally:
                done.set()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        while True:
            finished = done.wait(0.05)
            while out:
                yield out.pop(0)
            if finished:
                break
        if "error" in box:
            e = box["error"]
            if isinstance(e, RemoteError):
                context.abort(e.code, str(e))
            if isinstance(e, Cancelled):
                context.abort(grpc.StatusCode.CANCELLED, "context canceled")
            log("debug", "train failed", trace="".join(traceback.format_exception(type(e), e, e.__traceback__)))
            context.abort(grpc.StatusCode.UNKNOWN, "torch: train: %s" % e)
        yield bpb.TrainMessage(result_json=self._encode(box["result"]))

    def Close(self, req, context):
        b = self.b
        if b is not None:
            self._call(context, "close", b.close)
        return bpb.CloseResponse()

    def handler(self):
        m = {}
        for name, rq, rs in [("Open", bpb.OpenRequest, bpb.OpenResponse), ("Info", bpb.InfoRequest, bpb.InfoResponse),
                             ("Load", bpb.LoadRequest, bpb.LoadResponse), ("Save", bpb.SaveRequest, bpb.SaveResponse),
                             ("Release", bpb.ReleaseRequest, bpb.ReleaseResponse),
                             ("Stats", bpb.StatsRequest, bpb.StatsResponse),
                             ("Evaluate", bpb.EvaluateRequest, bpb.EvaluateResponse),
                             ("Generate", bpb.GenerateRequest, bpb.GenerateResponse),
                             ("Bench", bpb.BenchRequest, bpb.BenchResponse),
                             ("Close", bpb.CloseRequest, bpb.CloseResponse)]:
            m[name] = _unary(getattr(self, name), rq, rs)
        m["Train"] = grpc.unary_stream_rpc_method_handler(self.Train, request_deserializer=bpb.TrainRequest.FromString,
                                                          response_serializer=bpb.TrainMessage.SerializeToString)
        return grpc.method_handlers_generic_handler("whittle.plugin.v1.Backend", m)


def _server_cert(tmp):
    """A self-signed certificate for localhost (what go-plugin's own
    generateCert makes), through the openssl command-line tool, which every
    Debian system has (python3-cryptography is not a dependency), or the
    cryptography package where there is no openssl."""
    if shutil.which("openssl") is None:
        return _server_cert_cryptography()
    key, crt = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "3650", "-subj", "/O=whittle/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost",
                    "-addext", "extendedKeyUsage=serverAuth,clientAuth",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=digitalSignature,keyEncipherment,keyAgreement,keyCertSign"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    der = subprocess.run(["openssl", "x509", "-in", crt, "-outform", "DER"], check=True, stdout=subprocess.PIPE).stdout
    with open(key, "rb") as f:
        key_pem = f.read()
    with open(crt, "rb") as f:
        crt_pem = f.read()
    return key_pem, crt_pem, der


def _server_cert_cryptography():
    try:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise RuntimeError("AutoMTLS needs the openssl command (apt-get install openssl) or the cryptography package")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "whittle"), x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(seconds=30))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.DER)


def _watch_host():
    """Exits when whittle is gone: the host holds our stdin open and never
    writes it (WHITTLE_PLUGIN_HOST_STDIN=1)."""
    if os.environ.get(HOST_STDIN_ENV) != "1":
        return

    def run():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        log("info", "whittle is gone (stdin closed); exiting")
        os._exit(1)

    threading.Thread(target=run, daemon=True).start()


def serve(name, version, open_fn, on_exit=None):
    """Serves the plugin until the host shuts it down. open_fn(config dict)
    returns the backend object."""
    if os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        sys.stderr.write("whittle-plugin-%s is a whittle plugin: whittle starts it (backend \"x\" { plugin = \"%s\" }); "
                         "it is not meant to be run by hand\n" % (name, name))
        sys.exit(1)
    offered = [v.strip() for v in os.environ.get("PLUGIN_PROTOCOL_VERSIONS", "").split(",") if v.strip()]
    describe_only = bool(offered) and str(PROTOCOL_VERSION) not in offered
    app_version = PROTOCOL_VERSION
    if describe_only:
        # Like the Go SDK (wire.PluginSet): complete the handshake under the
        # host's version, serving Describe alone, so the host names the
        # mismatch.
        app_version = max(int(v) for v in offered if v.isdigit())
    _watch_host()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.max_receive_message_length", 1 << 30),
                                  ("grpc.max_send_message_length", 1 << 30)])
    stop = threading.Event()

    def shutdown(request, context):
        stop.set()
        return b""

    handlers = [
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(_health_check, _identity, _identity),
            "Watch": grpc.unary_stream_rpc_method_handler(_health_watch, _identity, _identity)}),
        grpc.method_handlers_generic_handler("plugin.GRPCController", {
            "Shutdown": grpc.unary_unary_rpc_method_handler(shutdown, _identity, _identity)}),
        grpc.method_handlers_generic_handler("plugin.GRPCStdio", {
            "StreamStdio": grpc.unary_stream_rpc_method_handler(_stdio, _identity, _identity)}),
        grpc.method_handlers_generic_handler("plugin.GRPCBroker", {
            "StartStream": grpc.stream_stream_rpc_method_handler(_broker, _identity, _identity)}),
        grpc.method_handlers_generic_handler("whittle.plugin.v1.Plugin", {
            "Describe": _unary(_Describe(name, version, not describe_only), ppb.DescribeRequest, ppb.DescribeResponse)}),
    ]
    svc = None
    if not describe_only:
        svc = BackendService(open_fn)
        handlers.append(svc.handler())
    server.add_generic_rpc_handlers(handlers)

    sockdir = os.environ.get("PLUGIN_UNIX_SOCKET_DIR") or tempfile.mkdtemp(prefix="whittle-torch-")
    sock = os.path.join(sockdir, "plugin-torch-%d.sock" % os.getpid())
    client_cert = os.environ.get("PLUGIN_CLIENT_CERT")
    cert_field = ""
    with tempfile.TemporaryDirectory(prefix="whittle-torch-tls-") as tmp:
        if client_cert:
            key_pem, crt_pem, der = _server_cert(tmp)
            creds = grpc.ssl_server_credentials([(key_pem, crt_pem)], root_certificates=client_cert.encode(),
                                                require_client_auth=True)
            server.add_secure_port("unix:" + sock, creds)
            cert_field = "|" + base64.b64encode(der).decode().rstrip("=")
        else:
            server.add_insecure_port("unix:" + sock)
    server.start()
    sys.stdout.write("%d|%d|unix|%s|grpc%s\n" % (CORE_PROTOCOL_VERSION, app_version, sock, cert_field))
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        if svc is not None and svc.b is not None:
            try:
                svc.b.close()
            except Exception:
                pass
        server.stop(grace=1)
        try:
            os.unlink(sock)
        except OSError:
            pass
        if on_exit:
            on_exit()
