// A small HTTP filter written against the AssemblyScript Proxy-Wasm SDK
// (@solo-io/proxy-runtime 0.1.8, AssemblyScript 0.14.13), used by the host's SDK tests.
//
// Plugin configuration: "key=value;key=value" with
//   tag        value of the x-as-tag request header and x-as-response response header
//   deny       request header whose presence is answered with a local 403 (default x-deny)
//   deny_body  a request body containing this text is answered with a local 403
//   reject     "1" makes proxy_on_configure fail (the plugin is refused)
// Request header x-as-empty-read adds x-as-empty-read-result (see emptyReadProbe).
// Request header x-as-crash makes the SDK throw (replace on a header map that does not exist yet).
export * from "../node_modules/@solo-io/proxy-runtime/assembly/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, FilterDataStatusValues,
  stream_context, send_local_response, log, LogLevelValues, GrpcStatusValues, HeaderPair, Headers, Counter,
} from "../node_modules/@solo-io/proxy-runtime/assembly/index";
import { get_property, get_buffer_bytes, BufferTypeValues } from "../node_modules/@solo-io/proxy-runtime/assembly/runtime";
import * as imports from "../node_modules/@solo-io/proxy-runtime/assembly/imports";

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
    return FilterHeadersStatusValues.Continue;
  }

  onRequestBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
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
    return FilterHeadersStatusValues.Continue;
  }

  onLog(): void {
    log(LogLevelValues.info, "as_filter done: status " + stream_context.headers.response.get(":status"));
  }
}

registerRootContext((context_id: u32): RootContext => { return new AsFilterRoot(context_id); }, "as_filter");
