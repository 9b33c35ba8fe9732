// callout_filter: HTTP callouts and paused requests with the official Go SDK.
// See test_go_callouts.py next to this folder.
//
//   - The root (plugin) context fetches feature flags from the "flags" cluster
//     when the plugin starts and again on every tick; every request carries the
//     latest answer in x-go-flags.
//   - A request with x-go-user is paused while the "auth" cluster is asked about
//     that user; 200 resumes it with x-go-auth set to the answer's body, any other
//     status gets a local 403, a failed callout a local 503.
//   - A request with x-go-hold is paused and parked in the plugin context; the
//     next tick resumes it through proxywasm.SetEffectiveContext.
//
// Plugin configuration: {"tick_ms": 1000} (default 1000).
package main

import (
	"encoding/json"
	"fmt"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() {
	proxywasm.SetPluginContext(func(contextID uint32) types.PluginContext {
		return &pluginContext{contextID: contextID}
	})
}

const (
	flagsCluster = "flags"
	authCluster  = "auth"
)

type pluginContext struct {
	types.DefaultPluginContext
	contextID uint32
	flags     string   // last answer from the flags cluster
	held      []uint32 // streams waiting for the next tick
	ticks     int
}

func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	cfg := struct {
		TickMs uint32 `json:"tick_ms"`
	}{TickMs: 1000}
	if data, err := proxywasm.GetPluginConfiguration(); err == nil && len(data) > 0 {
		if err := json.Unmarshal(data, &cfg); err != nil {
			proxywasm.LogErrorf("invalid configuration: %v", err)
			return types.OnPluginStartStatusFailed
		}
	}
	if err := proxywasm.SetTickPeriodMilliSeconds(cfg.TickMs); err != nil {
		proxywasm.LogErrorf("set_tick_period failed: %v", err)
		return types.OnPluginStartStatusFailed
	}
	p.fetchFlags("start")
	return types.OnPluginStartStatusOK
}

// fetchFlags is a callout from the root context: its answer arrives on the root
// context too, with no stream involved.
func (p *pluginContext) fetchFlags(why string) {
	headers := [][2]string{{":method", "GET"}, {":path", "/flags?why=" + why}, {":authority", "flags.internal"}}
	_, err := proxywasm.DispatchHttpCall(flagsCluster, headers, nil, nil, 5000, func(numHeaders, bodySize, numTrailers int) {
		if numHeaders == 0 {
			proxywasm.LogWarnf("flags callout failed; keeping %q", p.flags)
			return
		}
		body, _ := proxywasm.GetHttpCallResponseBody(0, bodySize)
		p.flags = string(body)
		proxywasm.LogInfof("flags are now %q", p.flags)
	})
	if err != nil {
		proxywasm.LogErrorf("flags callout not sent: %v", err)
	}
}

func (p *pluginContext) OnTick() {
	p.ticks++
	proxywasm.LogInfof("tick %d: releasing %d held request(s)", p.ticks, len(p.held))
	for _, id := range p.held {
		// Make the held stream current before touching its headers or resuming it.
		if err := proxywasm.SetEffectiveContext(id); err != nil {
			proxywasm.LogErrorf("stream %d is gone: %v", id, err)
			continue
		}
		_ = proxywasm.AddHttpRequestHeader("x-go-released-at-tick", fmt.Sprint(p.ticks))
		if err := proxywasm.ResumeHttpRequest(); err != nil {
			proxywasm.LogErrorf("resume %d failed: %v", id, err)
		}
	}
	p.held = nil
	p.fetchFlags("tick")
}

func (p *pluginContext) NewHttpContext(contextID uint32) types.HttpContext {
	return &httpContext{plugin: p, contextID: contextID}
}

type httpContext struct {
	types.DefaultHttpContext
	plugin    *pluginContext
	contextID uint32
}

func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	if h.plugin.flags != "" {
		_ = proxywasm.AddHttpRequestHeader("x-go-flags", h.plugin.flags)
	}
	if _, err := proxywasm.GetHttpRequestHeader("x-go-hold"); err == nil {
		h.plugin.held = append(h.plugin.held, h.contextID)
		proxywasm.LogInfof("holding stream %d until the next tick", h.contextID)
		return types.ActionPause
	}
	if user, err := proxywasm.GetHttpRequestHeader("x-go-user"); err == nil {
		return h.authorize(user)
	}
	return types.ActionContinue
}

// authorize pauses the request until the auth cluster answers.
func (h *httpContext) authorize(user string) types.Action {
	headers := [][2]string{
		{":method", "GET"}, {":path", "/users/" + user}, {":authority", "auth.internal"},
		{"x-go-asked-by", fmt.Sprint(h.contextID)},
	}
	_, err := proxywasm.DispatchHttpCall(authCluster, headers, nil, nil, 2000, func(numHeaders, bodySize, numTrailers int) {
		if numHeaders == 0 { // the callout failed: no response at all
			_ = proxywasm.SendHttpResponse(503, [][2]string{{"x-go-auth-error", "callout failed"}}, nil, -1)
			return
		}
		status := calloutStatus()
		body, _ := proxywasm.GetHttpCallResponseBody(0, bodySize)
		proxywasm.LogInfof("auth answered %s for %s: %q", status, user, body)
		if status != "200" {
			_ = proxywasm.SendHttpResponse(403, [][2]string{{"content-type", "text/plain"}},
				[]byte("user "+user+" refused by auth ("+status+")\n"), -1)
			return
		}
		_ = proxywasm.AddHttpRequestHeader("x-go-auth", string(body))
		_ = proxywasm.ResumeHttpRequest()
	})
	if err != nil {
		proxywasm.LogErrorf("auth callout not sent: %v", err)
		_ = proxywasm.SendHttpResponse(500, nil, []byte("auth callout not sent\n"), -1)
	}
	return types.ActionPause
}

// calloutStatus is the :status of the callout response being delivered.
func calloutStatus() string {
	headers, _ := proxywasm.GetHttpCallResponseHeaders()
	for _, kv := range headers {
		if kv[0] == ":status" {
			return kv[1]
		}
	}
	return ""
}
