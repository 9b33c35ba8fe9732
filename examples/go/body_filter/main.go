// body_filter: a Go SDK filter that replaces a whole body with one of another length and
// leaves content-length as the client or upstream sent it: the mistake the README warns about
// ("a filter that changes a body's length must remove content-length itself"). What reaches
// the other side then is decided by Envoy's HTTP/1 codec, not by the filter.
//
//   - x-go-edit: grow    -> the request body, buffered to its end, is sent twice over;
//     x-go-edit: shrink  -> only its first half is sent;
//     x-go-edit: fix     -> as grow, but content-length is removed in the headers callback;
//   - x-go-edit-response: grow|shrink|fix -> the same for the response body.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o body_filter.wasm .
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() {
	proxywasm.SetPluginContext(func(uint32) types.PluginContext { return &pluginContext{} })
}

type pluginContext struct {
	types.DefaultPluginContext
}

func (*pluginContext) NewHttpContext(uint32) types.HttpContext {
	return &httpContext{}
}

type httpContext struct {
	types.DefaultHttpContext
	request, response string // the edit asked for each direction: "", grow, shrink or fix
}

func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	h.request, _ = proxywasm.GetHttpRequestHeader("x-go-edit")
	h.response, _ = proxywasm.GetHttpRequestHeader("x-go-edit-response")
	if h.request == "fix" {
		logFailure(proxywasm.RemoveHttpRequestHeader("content-length"))
	}
	return types.ActionContinue
}

func (h *httpContext) OnHttpRequestBody(bodySize int, endOfStream bool) types.Action {
	return replaceBody("request", h.request, bodySize, endOfStream,
		proxywasm.GetHttpRequestBody, proxywasm.ReplaceHttpRequestBody)
}

func (h *httpContext) OnHttpResponseHeaders(int, bool) types.Action {
	if h.response == "fix" {
		logFailure(proxywasm.RemoveHttpResponseHeader("content-length"))
	}
	return types.ActionContinue
}

func (h *httpContext) OnHttpResponseBody(bodySize int, endOfStream bool) types.Action {
	return replaceBody("response", h.response, bodySize, endOfStream,
		proxywasm.GetHttpResponseBody, proxywasm.ReplaceHttpResponseBody)
}

// replaceBody buffers a body to its end (Pause), then replaces it as `how` says.
func replaceBody(what, how string, bodySize int, endOfStream bool,
	get func(int, int) ([]byte, error), replace func([]byte) error) types.Action {
	if how == "" {
		return types.ActionContinue
	}
	if !endOfStream {
		return types.ActionPause
	}
	body, err := get(0, bodySize)
	if err != nil {
		body = nil
	}
	edited := edit(how, body)
	proxywasm.LogInfof("%s body %d -> %d bytes (%s)", what, len(body), len(edited), how)
	logFailure(replace(edited))
	return types.ActionContinue
}

// edit returns the body twice over (grow, fix) or its first half (shrink).
func edit(how string, body []byte) []byte {
	if how == "shrink" {
		return body[:len(body)/2]
	}
	return append(append([]byte{}, body...), body...)
}

func logFailure(err error) {
	if err != nil {
		proxywasm.LogErrorf("hostcall failed: %v", err)
	}
}
