// shared_filter: state shared between VMs with the official Go SDK.
// See test_go_shared.py next to this folder.
//
// The plugin configuration picks a role:
//
//	{"role": "counter"}   every request increments the shared-data key "hits"
//	                      with a compare-and-swap loop and sees the new value in
//	                      x-go-hits; /stale-cas shows a CAS mismatch on purpose.
//	{"role": "producer", "queue_vm_id": "collector"}
//	                      every request is enqueued on the shared queue "events"
//	                      registered by the collector VM.
//	{"role": "collector"} registers the queue "events"; each time it becomes ready
//	                      the collector drains it, logs each event and counts them.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() {
	proxywasm.SetPluginContext(func(contextID uint32) types.PluginContext { return &pluginContext{} })
}

const (
	hitsKey   = "hits"
	queueName = "events"
)

type config struct {
	Role      string `json:"role"`
	QueueVMID string `json:"queue_vm_id"`
}

type pluginContext struct {
	types.DefaultPluginContext
	cfg     config
	queueID uint32
	events  proxywasm.MetricCounter
}

func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	data, _ := proxywasm.GetPluginConfiguration()
	p.cfg = config{Role: "counter"}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &p.cfg); err != nil {
			proxywasm.LogErrorf("invalid configuration: %v", err)
			return types.OnPluginStartStatusFailed
		}
	}
	switch p.cfg.Role {
	case "counter", "producer":
	case "collector":
		id, err := proxywasm.RegisterSharedQueue(queueName)
		if err != nil {
			proxywasm.LogErrorf("register_shared_queue failed: %v", err)
			return types.OnPluginStartStatusFailed
		}
		p.queueID = id
		p.events = proxywasm.DefineCounterMetric("go_shared.events_collected")
		proxywasm.LogInfof("collector: queue %q registered", queueName)
	default:
		proxywasm.LogErrorf("unknown role %q", p.cfg.Role)
		return types.OnPluginStartStatusFailed
	}
	return types.OnPluginStartStatusOK
}

// OnQueueReady runs in the collector's VM after another VM enqueued something.
func (p *pluginContext) OnQueueReady(queueID uint32) {
	for {
		item, err := proxywasm.DequeueSharedQueue(queueID)
		if errors.Is(err, types.ErrorStatusEmpty) {
			return
		}
		if err != nil {
			proxywasm.LogErrorf("dequeue failed: %v", err)
			return
		}
		p.events.Increment(1)
		proxywasm.LogInfof("collected event: %s", item)
	}
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
	path, _ := proxywasm.GetHttpRequestHeader(":path")
	switch h.plugin.cfg.Role {
	case "counter":
		if path == "/stale-cas" {
			_ = proxywasm.AddHttpRequestHeader("x-go-stale-cas", staleCasDemo())
		}
		hits, retries, err := incrementHits()
		if err != nil {
			proxywasm.LogErrorf("counter failed: %v", err)
			return types.ActionContinue
		}
		_ = proxywasm.AddHttpRequestHeader("x-go-hits", strconv.FormatUint(hits, 10))
		_ = proxywasm.AddHttpRequestHeader("x-go-cas-retries", strconv.Itoa(retries))
	case "producer":
		if err := h.publish("request " + path); err != nil {
			proxywasm.LogErrorf("enqueue failed: %v", err)
			_ = proxywasm.AddHttpRequestHeader("x-go-enqueued", "no: "+err.Error())
		} else {
			_ = proxywasm.AddHttpRequestHeader("x-go-enqueued", "yes")
		}
	}
	return types.ActionContinue
}

// publish resolves the collector's queue on first use (the collector may start
// after us) and enqueues one event.
func (h *httpContext) publish(event string) error {
	p := h.plugin
	if p.queueID == 0 {
		id, err := proxywasm.ResolveSharedQueue(p.cfg.QueueVMID, queueName)
		if err != nil {
			return fmt.Errorf("resolve %s/%s: %w", p.cfg.QueueVMID, queueName, err)
		}
		p.queueID = id
	}
	return proxywasm.EnqueueSharedQueue(p.queueID, []byte(event))
}

// incrementHits is the usual CAS loop: read value and cas, write with that cas,
// retry when another VM wrote in between.
func incrementHits() (value uint64, retries int, err error) {
	for retries = 0; retries < 10; retries++ {
		data, cas, err := proxywasm.GetSharedData(hitsKey)
		if err != nil && !errors.Is(err, types.ErrorStatusNotFound) {
			return 0, retries, err
		}
		current, _ := strconv.ParseUint(string(data), 10, 64)
		next := current + 1
		err = proxywasm.SetSharedData(hitsKey, []byte(strconv.FormatUint(next, 10)), cas)
		if err == nil {
			return next, retries, nil
		}
		if !errors.Is(err, types.ErrorStatusCasMismatch) {
			return 0, retries, err
		}
	}
	return 0, retries, errors.New("too much contention")
}

// staleCasDemo writes the key "demo" twice with the same cas: the second write
// must be refused because the first one changed the cas.
func staleCasDemo() string {
	if err := proxywasm.SetSharedData("demo", []byte("seed"), 0); err != nil {
		return "seed failed: " + err.Error()
	}
	_, cas, err := proxywasm.GetSharedData("demo")
	if err != nil {
		return "get failed: " + err.Error()
	}
	first := proxywasm.SetSharedData("demo", []byte("first"), cas)
	second := proxywasm.SetSharedData("demo", []byte("second"), cas)
	return fmt.Sprintf("first=%v second=%v", errText(first), errText(second))
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
