// http_filter: an HTTP filter written with the official Go SDK
// (github.com/proxy-wasm/proxy-wasm-go-sdk), used as the guide for testing a Go
// filter with proxywasm-host. See test_go_http_filter.py next to this folder.
//
// What it does, request by request:
//   - request headers: adds x-go-tag (from the plugin configuration) and x-go-vm
//     (from the VM configuration), replaces x-go-replace, removes x-go-remove, and
//     reports what it read (x-go-header-count, x-go-header-names);
//   - properties: copies route metadata, the method and path, the client address
//     and the plugin name into x-go-* request headers;
//   - a path under deny_prefix gets a local 403 with headers;
//   - x-go-body: buffer  -> the request body is held until the end of the stream,
//     then rewritten (upper-cased, wrapped in "<<" ">>");
//     x-go-body: stream  -> every chunk is upper-cased as it passes;
//   - x-go-wrap-response: 1 -> the response body is buffered and wrapped in JSON;
//   - trailers: counts request trailers into a trailer, adds a response trailer
//     with the number of response body bytes seen;
//   - x-go-lookup: NAME -> calls the foreign function "go_lookup" with NAME;
//   - x-go-panic: 1 -> panics (the VM fails; Envoy's failure policy applies);
//   - metrics: a counter, a counter per method (the tag lives in the name), a
//     gauge of active requests and a histogram of request body sizes.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o http_filter.wasm .
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() {
	proxywasm.SetVMContext(&vmContext{})
}

// ---- VM: reads the VM configuration once -----------------------------------

type vmContext struct {
	types.DefaultVMContext
	vmConfig string
}

func (vm *vmContext) OnVMStart(vmConfigurationSize int) types.OnVMStartStatus {
	if vmConfigurationSize > 0 {
		data, err := proxywasm.GetVMConfiguration()
		if err != nil {
			proxywasm.LogCriticalf("cannot read the VM configuration: %v", err)
			return types.OnVMStartStatusFailed
		}
		vm.vmConfig = string(data)
	}
	proxywasm.LogInfof("go http_filter: VM started (vm configuration %q)", vm.vmConfig)
	return types.OnVMStartStatusOK
}

func (vm *vmContext) NewPluginContext(contextID uint32) types.PluginContext {
	return &pluginContext{vm: vm, byMethod: map[string]proxywasm.MetricCounter{}}
}

// ---- plugin: configuration and metrics -------------------------------------

type config struct {
	Tag        string `json:"tag"`
	DenyPrefix string `json:"deny_prefix"`
}

type pluginContext struct {
	types.DefaultPluginContext
	vm  *vmContext
	cfg config

	requests  proxywasm.MetricCounter
	active    proxywasm.MetricGauge
	bodyBytes proxywasm.MetricHistogram
	byMethod  map[string]proxywasm.MetricCounter
}

func (p *pluginContext) OnPluginStart(pluginConfigurationSize int) types.OnPluginStartStatus {
	data, err := proxywasm.GetPluginConfiguration()
	if err != nil && !errors.Is(err, types.ErrorStatusNotFound) {
		proxywasm.LogCriticalf("cannot read the plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	p.cfg = config{Tag: "go", DenyPrefix: "/admin"}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &p.cfg); err != nil {
			proxywasm.LogErrorf("invalid plugin configuration %q: %v", string(data), err)
			return types.OnPluginStartStatusFailed
		}
	}
	p.requests = proxywasm.DefineCounterMetric("go_http.requests_total")
	p.active = proxywasm.DefineGaugeMetric("go_http.active_requests")
	p.bodyBytes = proxywasm.DefineHistogramMetric("go_http.request_body_bytes")
	proxywasm.LogInfof("go http_filter: configured tag=%s deny_prefix=%s", p.cfg.Tag, p.cfg.DenyPrefix)
	return types.OnPluginStartStatusOK
}

// countMethod increments a counter whose name carries the method as a tag
// ("go_http.requests_method=GET"); Envoy's stats tag extraction can split it.
func (p *pluginContext) countMethod(method string) {
	c, ok := p.byMethod[method]
	if !ok {
		c = proxywasm.DefineCounterMetric("go_http.requests_method=" + method)
		p.byMethod[method] = c
	}
	c.Increment(1)
}

func (p *pluginContext) NewHttpContext(contextID uint32) types.HttpContext {
	return &httpContext{plugin: p, contextID: contextID}
}

// ---- one HTTP stream ------------------------------------------------------

type httpContext struct {
	types.DefaultHttpContext
	plugin    *pluginContext
	contextID uint32

	bodyMode      string // "", "buffer" or "stream"
	chunks        int
	wrapResponse  bool
	responseBytes int
}

func (h *httpContext) OnHttpRequestHeaders(numHeaders int, endOfStream bool) types.Action {
	p := h.plugin
	p.requests.Increment(1)
	p.active.Add(1)

	headers, err := proxywasm.GetHttpRequestHeaders()
	if err != nil {
		proxywasm.LogErrorf("cannot read request headers: %v", err)
		return types.ActionContinue
	}
	names := make([]string, 0, len(headers))
	for _, kv := range headers {
		if !strings.HasPrefix(kv[0], ":") {
			names = append(names, kv[0])
		}
	}
	sort.Strings(names)

	method, _ := proxywasm.GetHttpRequestHeader(":method")
	path, _ := proxywasm.GetHttpRequestHeader(":path")
	p.countMethod(method)
	proxywasm.LogInfof("request %s %s with %d headers", method, path, numHeaders)

	if v, _ := proxywasm.GetHttpRequestHeader("x-go-panic"); v != "" {
		panic("x-go-panic asked for a panic")
	}

	if strings.HasPrefix(path, p.cfg.DenyPrefix) {
		body := fmt.Sprintf("%s is not allowed here (tag %s)\n", path, p.cfg.Tag)
		err := proxywasm.SendHttpResponse(403, [][2]string{
			{"content-type", "text/plain"},
			{"x-go-denied-by", p.cfg.Tag},
		}, []byte(body), -1)
		if err != nil {
			proxywasm.LogErrorf("send_local_response failed: %v", err)
		}
		return types.ActionPause
	}

	// Add, replace, remove.
	must(proxywasm.AddHttpRequestHeader("x-go-tag", p.cfg.Tag))
	must(proxywasm.AddHttpRequestHeader("x-go-vm", p.vm.vmConfig))
	must(proxywasm.ReplaceHttpRequestHeader("x-go-replace", "replaced by go"))
	must(proxywasm.RemoveHttpRequestHeader("x-go-remove"))
	must(proxywasm.AddHttpRequestHeader("x-go-header-count", fmt.Sprint(len(headers))))
	must(proxywasm.AddHttpRequestHeader("x-go-header-names", strings.Join(names, ",")))

	h.copyProperties()

	if name, err := proxywasm.GetHttpRequestHeader("x-go-lookup"); err == nil {
		answer, err := proxywasm.CallForeignFunction("go_lookup", []byte(name))
		if err != nil {
			must(proxywasm.AddHttpRequestHeader("x-go-lookup-result", "error: "+err.Error()))
		} else {
			must(proxywasm.AddHttpRequestHeader("x-go-lookup-result", string(answer)))
		}
	}

	h.bodyMode, _ = proxywasm.GetHttpRequestHeader("x-go-body")
	if h.bodyMode == "buffer" {
		// The body changes size and Envoy does not fix content-length for us.
		must(proxywasm.RemoveHttpRequestHeader("content-length"))
	}
	if v, _ := proxywasm.GetHttpRequestHeader("x-go-wrap-response"); v != "" {
		h.wrapResponse = true
	}
	return types.ActionContinue
}

// copyProperties reads Envoy attributes and forwards them as headers.
func (h *httpContext) copyProperties() {
	// A leaf of the route's metadata: xds.route_metadata.filter_metadata.<ns>.<key>.
	if tier, err := proxywasm.GetProperty([]string{"xds", "route_metadata", "filter_metadata", "go_filter", "tier"}); err == nil {
		must(proxywasm.AddHttpRequestHeader("x-go-route-tier", string(tier)))
	}
	// A nested map: read it whole with GetPropertyMap.
	if limits, err := proxywasm.GetPropertyMap([]string{"xds", "route_metadata", "filter_metadata", "go_filter", "limits"}); err == nil {
		pairs := make([]string, 0, len(limits))
		for _, kv := range limits {
			pairs = append(pairs, kv[0]+"="+kv[1])
		}
		sort.Strings(pairs)
		must(proxywasm.AddHttpRequestHeader("x-go-route-limits", strings.Join(pairs, ",")))
	}
	// A slice, not a map: Go randomizes map order and the headers would move around.
	for _, p := range []struct {
		header string
		path   []string
	}{
		{"x-go-prop-method", []string{"request", "method"}},
		{"x-go-prop-path", []string{"request", "path"}},
		{"x-go-source", []string{"source", "address"}},
		{"x-go-plugin-name", []string{"plugin_name"}},
	} {
		if v, err := proxywasm.GetProperty(p.path); err == nil {
			must(proxywasm.AddHttpRequestHeader(p.header, string(v)))
		} else {
			must(proxywasm.AddHttpRequestHeader(p.header, "<"+err.Error()+">"))
		}
	}
}

func (h *httpContext) OnHttpRequestBody(bodySize int, endOfStream bool) types.Action {
	switch h.bodyMode {
	case "buffer":
		if !endOfStream {
			return types.ActionPause // Envoy keeps buffering; the next call sees everything so far
		}
		body, err := proxywasm.GetHttpRequestBody(0, bodySize)
		if err != nil {
			body = nil
		}
		h.plugin.bodyBytes.Record(uint64(len(body)))
		proxywasm.LogInfof("buffered request body: %d bytes", len(body))
		must(proxywasm.ReplaceHttpRequestBody(bytes.ToUpper(body)))
		must(proxywasm.PrependHttpRequestBody([]byte("<<")))
		must(proxywasm.AppendHttpRequestBody([]byte(">>")))
	case "stream":
		h.chunks++
		chunk, err := proxywasm.GetHttpRequestBody(0, bodySize)
		if err == nil {
			must(proxywasm.ReplaceHttpRequestBody(bytes.ToUpper(chunk)))
		}
		proxywasm.LogInfof("request chunk %d: %d bytes (end_of_stream=%t)", h.chunks, len(chunk), endOfStream)
	}
	return types.ActionContinue
}

func (h *httpContext) OnHttpRequestTrailers(numTrailers int) types.Action {
	trailers, err := proxywasm.GetHttpRequestTrailers()
	if err != nil {
		proxywasm.LogErrorf("cannot read request trailers: %v", err)
		return types.ActionContinue
	}
	for _, kv := range trailers {
		proxywasm.LogInfof("request trailer %s: %s", kv[0], kv[1])
	}
	must(proxywasm.AddHttpRequestTrailer("x-go-trailers-seen", fmt.Sprint(len(trailers))))
	return types.ActionContinue
}

func (h *httpContext) OnHttpResponseHeaders(numHeaders int, endOfStream bool) types.Action {
	must(proxywasm.AddHttpResponseHeader("x-go-tag", h.plugin.cfg.Tag))
	must(proxywasm.RemoveHttpResponseHeader("x-upstream-secret"))
	if h.wrapResponse {
		must(proxywasm.RemoveHttpResponseHeader("content-length"))
		must(proxywasm.ReplaceHttpResponseHeader("content-type", "application/json"))
	}
	return types.ActionContinue
}

func (h *httpContext) OnHttpResponseBody(bodySize int, endOfStream bool) types.Action {
	if !h.wrapResponse {
		h.responseBytes = bodySize
		return types.ActionContinue
	}
	if !endOfStream {
		return types.ActionPause
	}
	body, err := proxywasm.GetHttpResponseBody(0, bodySize)
	if err != nil {
		body = nil
	}
	h.responseBytes = len(body)
	quoted, _ := json.Marshal(string(body))
	must(proxywasm.ReplaceHttpResponseBody(quoted))
	must(proxywasm.PrependHttpResponseBody([]byte(`{"tag":"` + h.plugin.cfg.Tag + `","upstream":`)))
	must(proxywasm.AppendHttpResponseBody([]byte("}")))
	return types.ActionContinue
}

func (h *httpContext) OnHttpResponseTrailers(numTrailers int) types.Action {
	must(proxywasm.AddHttpResponseTrailer("x-go-response-bytes", fmt.Sprint(h.responseBytes)))
	return types.ActionContinue
}

func (h *httpContext) OnHttpStreamDone() {
	h.plugin.active.Add(-1)
	code := "none"
	// Integer properties are int64, little-endian.
	if raw, err := proxywasm.GetProperty([]string{"response", "code"}); err == nil && len(raw) == 8 {
		code = fmt.Sprint(binary.LittleEndian.Uint64(raw))
	}
	proxywasm.LogInfof("stream %d done: response code %s", h.contextID, code)
}

// must logs a failed hostcall; a filter should not stop a request over it.
func must(err error) {
	if err != nil {
		proxywasm.LogErrorf("hostcall failed: %v", err)
	}
}
