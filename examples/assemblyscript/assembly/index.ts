// An HTTP filter written against the AssemblyScript Proxy-Wasm SDK
// (@solo-io/proxy-runtime 0.1.8, AssemblyScript 0.14.13); tested by test_as_filter.py (host)
// and integration/test_sdk_assemblyscript_parity.py (host vs Envoy 1.40).
//
// Plugin configuration: "key=value;key=value" with
//   tag        value of the x-as-tag request header and x-as-response response header
//   deny       request header whose presence is answered with a local 403 (default x-deny)
//   deny_body  a request body containing this text is answered with a local 403
//   cluster    cluster for the HTTP callout (default as_callout)
//   reject     "1" makes proxy_on_configure fail (the plugin is refused)
// Request headers that switch features on:
//   x-as-empty-read        adds x-as-empty-read-result (see emptyReadProbe)
//   x-as-crash             makes the SDK throw (replace on a header map that does not exist yet)
//   x-as-body: rewrite     buffers the request body until end of stream, then replaces it
//   x-as-response-body: rewrite   the same for the response body
//   x-as-callout: <path>   pauses the request, calls <path> on the cluster and resumes (or answers
//                          locally) from the callout's response headers and body
//   x-as-count             increments the shared-data counter "as_filter.hits" with CAS
//   x-as-cas-stale         shows a stale CAS being refused on "as_filter.cas_probe"
export * from "../node_modules/@solo-io/proxy-runtime/assembly/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, FilterDataStatusValues,
  stream_context, send_local_response, log, LogLevelValues, GrpcStatusValues, HeaderPair, Headers, Counter,
} from "../node_modules/@solo-io/proxy-runtime/assembly/index";
import { get_property, get_buffer_bytes, BufferTypeValues } from "../node_modules/@solo-io/proxy-runtime/assembly/runtime";
import * as imports from "../node_modules/@solo-io/proxy-runtime/assembly/imports";
import { free } from "../node_modules/@solo-io/proxy-runtime/assembly/malloc";
import { continue_request } from "../node_modules/@solo-io/proxy-runtime/assembly/runtime";

// The SDK 0.1.8 has no working wrapper for these: its proxy_set_buffer_status is bound to the import
// name proxy_get_buffer_status (with a different signature), and get_shared_data/set_shared_data pass
// their out-pointers wrongly. So the filter declares/calls the ABI functions itself.
// @ts-ignore: decorator
@external("env", "proxy_set_buffer_bytes")
declare function proxy_set_buffer_bytes(typ: u32, start: u32, length: u32, data: usize, size: usize): u32;

function replaceBuffer(typ: BufferTypeValues, length: u32, text: string): u32 {
  const data = String.UTF8.encode(text);
  return proxy_set_buffer_bytes(typ as u32, 0, length, changetype<usize>(data), data.byteLength);
}

function readBuffer(typ: BufferTypeValues, length: u32): string {
  if (length == 0) return "";
  return String.UTF8.decode(get_buffer_bytes(typ, 0, length));
}

class SharedValue {
  result: u32 = 0;
  value: string = "";
  cas: u32 = 0;
}

function sharedGet(key: string): SharedValue {
  const k = String.UTF8.encode(key);
  const out = new Uint32Array(3);  // value pointer (malloc'd by the host), value size, cas
  const r = imports.proxy_get_shared_data(changetype<usize>(k), k.byteLength, out.dataStart, out.dataStart + 4, out.dataStart + 8);
  const v = new SharedValue();
  v.result = r;
  if (r == 0) {
    if (out[1] > 0) {
      v.value = String.UTF8.decodeUnsafe(out[0], out[1]);
      free(out[0]);
    }
    v.cas = out[2];
  }
  return v;
}

function sharedSet(key: string, value: string, cas: u32): u32 {
  const k = String.UTF8.encode(key);
  const data = String.UTF8.encode(value);
  return imports.proxy_set_shared_data(changetype<usize>(k), k.byteLength, changetype<usize>(data), data.byteLength, cas);
}

// get + set with the cas from the get, retried on CasMismatch (8): a counter shared by all workers.
// Answers "<new value> after <n> attempt(s)" or the failing result.
function sharedIncrement(key: string): string {
  for (let attempt = 1; attempt <= 10; attempt++) {
    const current = sharedGet(key);
    if (current.result != 0 && current.result != 1) return "get failed " + current.result.toString();
    const next = (current.result == 0 ? I32.parseInt(current.value, 10) : 0) + 1;
    const r = sharedSet(key, next.toString(), current.cas);
    if (r == 0) return next.toString();
    if (r != 8) return "set failed " + r.toString();
  }
  return "gave up";
}

// get (NotFound the first time), set with cas 0, get the new cas, set with it (Ok), set with the same
// now-stale cas again (CasMismatch): "<get>,<set0>,<set with cas>,<stale set>,<final value>".
function casProbe(): string {
  const key = "as_filter.cas_probe";
  const first = sharedGet(key);
  const s0 = sharedSet(key, "a", 0);
  const got = sharedGet(key);
  const s1 = sharedSet(key, "b", got.cas);
  const s2 = sharedSet(key, "c", got.cas);
  const last = sharedGet(key);
  return first.result.toString() + "," + s0.toString() + "," + s1.toString() + "," + s2.toString() + "," + last.value;
}

// The callout's response arrives on the root context (Envoy owns callouts there); the SDK sets the
// effective context back to the stream before calling this.
function calloutDone(origin: Context, headers: u32, body_size: usize, trailers: u32): void {
  const f = origin as AsFilter;
  const status = stream_context.headers.http_callback.get(":status");
  const verdict = stream_context.headers.http_callback.get("x-verdict");
  const body = readBuffer(BufferTypeValues.HttpCallResponseBody, body_size as u32);
  const pairs = stream_context.headers.http_callback.get_headers();
  let names = "";
  for (let i = 0; i < pairs.length; i++) names += (i == 0 ? "" : ",") + String.UTF8.decode(pairs[i].key);
  log(LogLevelValues.info, "as_filter callout response: headers=" + headers.toString() + " [" + names + "] status=" +
    status + " body_size=" + body_size.toString() + " trailers=" + trailers.toString());
  if (headers == 0) {
    deny(503, "as_filter_callout_failed", "callout failed\n", f.root.tag);
    return;
  }
  if (status != "200" || verdict != "allow") {
    deny(403, "as_filter_callout_denied", "callout said " + status + ": " + body, verdict);
    return;
  }
  stream_context.headers.request.add("x-as-callout-status", status);
  stream_context.headers.request.add("x-as-callout-body", body);
  stream_context.headers.request.add("x-as-callout-verdict", verdict);
  const r = continue_request();
  log(LogLevelValues.info, "as_filter continue_request: " + r.toString());
}

// What a zero-length proxy_get_buffer_bytes leaves in its out-parameters. RootContext.onConfigure
// makes exactly this call (length = configuration size) and then trusts the out-parameters.
function emptyReadProbe(): string {
  const out = new Uint32Array(2);
  out[0] = 0xabcd;
  out[1] = 0x1234;
  const base = out.dataStart;
  const result = imports.proxy_get_buffer_bytes(BufferTypeValues.VmConfiguration, 0, 0, base, base + 4);
  return result.toString() + "," + out[0].toString() + "," + out[1].toString();
}

class AsFilterRoot extends RootContext {
  tag: string = "none";
  deny: string = "x-deny";
  denyBody: string = "";
  reject: bool = false;
  cluster: string = "as_callout";
  seen: u32 = 0;
  requests: Counter;

  constructor(context_id: u32) {
    super(context_id);
    this.requests = new Counter("as_filter.requests");
  }

  onConfigure(configuration_size: u32): bool {
    super.onConfigure(configuration_size);
    const parts = this.getConfiguration().split(";");
    for (let i = 0; i < parts.length; i++) {
      const kv = parts[i];
      const eq = kv.indexOf("=");
      if (eq < 0) continue;
      const key = kv.substring(0, eq);
      const value = kv.substring(eq + 1);
      if (key == "tag") this.tag = value;
      else if (key == "deny") this.deny = value;
      else if (key == "deny_body") this.denyBody = value;
      else if (key == "reject") this.reject = value == "1";
      else if (key == "cluster") this.cluster = value;
    }
    log(LogLevelValues.info, "as_filter configured: size=" + configuration_size.toString() + " config=[" +
      this.getConfiguration() + "] tag=" + this.tag + " deny=" + this.deny);
    return !this.reject;
  }

  createContext(context_id: u32): Context {
    return new AsFilter(context_id, this);
  }
}

function deny(status: u32, details: string, reason: string, value: string): void {
  const headers: Headers = [];
  headers.push(new HeaderPair(String.UTF8.encode("x-as-denied"), String.UTF8.encode(value)));
  send_local_response(status, details, String.UTF8.encode(reason), headers, GrpcStatusValues.InvalidCode);
}

class AsFilter extends Context {
  root: AsFilterRoot;
  rewriteRequest: bool = false;
  rewriteResponse: bool = false;

  constructor(context_id: u32, root_context: AsFilterRoot) {
    super(context_id, root_context);
    this.root = root_context;
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root;
    root.seen += 1;
    root.requests.increment(1);
    const path = stream_context.headers.request.get(":path");
    log(LogLevelValues.info, "as_filter request #" + root.seen.toString() + " " + path);
    if (stream_context.headers.request.get("x-as-crash") != "") {
      stream_context.headers.response.replace("x-as-never", "1");  // NotFound -> the SDK throws
    }
    const denied = stream_context.headers.request.get(root.deny);
    if (denied != "") {
      deny(403, "as_filter_denied", "denied by " + root.tag + "\n", denied);
      return FilterHeadersStatusValues.StopIteration;
    }
    if (stream_context.headers.request.get("x-as-empty-read") != "") {
      stream_context.headers.request.add("x-as-empty-read-result", emptyReadProbe());
    }
    const pairs = stream_context.headers.request.get_headers();
    let names = "";
    for (let i = 0; i < pairs.length; i++) {
      const name = String.UTF8.decode(pairs[i].key);
      if (name.startsWith("x-client-")) names += (names == "" ? "" : ",") + name;
    }
    const req = stream_context.headers.request;
    req.add("x-as-tag", root.tag);
    req.add("x-as-config", root.getConfiguration());
    req.add("x-as-seen", root.seen.toString());
    req.add("x-as-client-headers", names);
    req.add("x-as-path", String.UTF8.decode(get_property("request\0path")  /* segments are NUL-separated */));
    req.add("x-as-plugin", String.UTF8.decode(get_property("plugin_name")));
    req.replace("x-as-replaced", "by-as");
    req.remove("x-as-remove-me");
    if (req.get("x-as-count") != "") req.add("x-as-shared-count", sharedIncrement("as_filter.hits"));
    if (req.get("x-as-cas-stale") != "") req.add("x-as-cas-probe", casProbe());
    if (req.get("x-as-body") == "rewrite") {
      this.rewriteRequest = true;
      req.remove("content-length");  // the new body has another length
    }
    this.rewriteResponse = req.get("x-as-response-body") == "rewrite";
    const calloutPath = req.get("x-as-callout");
    if (calloutPath != "") {
      const callHeaders: Headers = [];
      callHeaders.push(new HeaderPair(String.UTF8.encode(":method"), String.UTF8.encode("GET")));
      callHeaders.push(new HeaderPair(String.UTF8.encode(":path"), String.UTF8.encode(calloutPath)));
      callHeaders.push(new HeaderPair(String.UTF8.encode(":authority"), String.UTF8.encode("as-callout")));
      callHeaders.push(new HeaderPair(String.UTF8.encode("x-as-from"), String.UTF8.encode(root.tag)));
      const r = root.httpCall(root.cluster, callHeaders, new ArrayBuffer(0), [], 5000, this, calloutDone);
      log(LogLevelValues.info, "as_filter callout to " + root.cluster + " " + calloutPath + ": " + r.toString());
      if (r != 0) {
        deny(500, "as_filter_callout_failed", "callout not sent: " + r.toString() + "\n", root.cluster);
      }
      return FilterHeadersStatusValues.StopIteration;
    }
    return FilterHeadersStatusValues.Continue;
  }

  onRequestBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    if (this.rewriteRequest) {
      log(LogLevelValues.info, "as_filter request body: buffered=" + body_buffer_length.toString() + " end=" + (end_of_stream ? "1" : "0"));
      if (!end_of_stream) return FilterDataStatusValues.StopIterationAndBuffer;
      const length = body_buffer_length as u32;
      const body = readBuffer(BufferTypeValues.HttpRequestBody, length);
      const r = replaceBuffer(BufferTypeValues.HttpRequestBody, length,
        "as_filter saw " + length.toString() + " bytes: " + body.toUpperCase());
      log(LogLevelValues.info, "as_filter request body replaced: " + r.toString());
      return FilterDataStatusValues.Continue;
    }
    if (this.root.denyBody == "") return FilterDataStatusValues.Continue;
    if (!end_of_stream) return FilterDataStatusValues.StopIterationAndBuffer;
    if (body_buffer_length == 0) return FilterDataStatusValues.Continue;
    const body = String.UTF8.decode(get_buffer_bytes(BufferTypeValues.HttpRequestBody, 0, body_buffer_length as u32));
    log(LogLevelValues.info, "as_filter body " + body_buffer_length.toString() + " bytes");
    if (body.indexOf(this.root.denyBody) >= 0) {
      deny(403, "as_filter_body_denied", "body denied by " + this.root.tag + "\n", this.root.denyBody);
      return FilterDataStatusValues.StopIterationNoBuffer;
    }
    return FilterDataStatusValues.Continue;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const status = stream_context.headers.response.get(":status");
    stream_context.headers.response.add("x-as-response", this.root.tag);
    stream_context.headers.response.add("x-as-status-seen", status);
    if (this.rewriteResponse) stream_context.headers.response.remove("content-length");
    return FilterHeadersStatusValues.Continue;
  }

  onResponseBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    if (!this.rewriteResponse) return FilterDataStatusValues.Continue;
    log(LogLevelValues.info, "as_filter response body: buffered=" + body_buffer_length.toString() + " end=" + (end_of_stream ? "1" : "0"));
    if (!end_of_stream) return FilterDataStatusValues.StopIterationAndBuffer;
    const length = body_buffer_length as u32;
    const body = readBuffer(BufferTypeValues.HttpResponseBody, length);
    const r = replaceBuffer(BufferTypeValues.HttpResponseBody, length,
      "{\"as_filter\": \"" + this.root.tag + "\", \"upstream_bytes\": " + length.toString() + ", \"upstream\": \"" + body + "\"}\n");
    log(LogLevelValues.info, "as_filter response body replaced: " + r.toString());
    return FilterDataStatusValues.Continue;
  }

  onLog(): void {
    log(LogLevelValues.info, "as_filter done: status " + stream_context.headers.response.get(":status"));
  }
}

registerRootContext((context_id: u32): RootContext => { return new AsFilterRoot(context_id); }, "as_filter");
