// <piximi-segmenter>: embed the piximi-py segmenter in any web page.
//
//   <script type="module" src="https://YOUR.HOST/piximi/embed.js"></script>
//   <piximi-segmenter src="https://YOUR.HOST/piximi/"></piximi-segmenter>
//
//   const seg = document.querySelector("piximi-segmenter");
//   await seg.ready;                                   // runtime + model loaded
//   const res = await seg.segment(fileOrBlobOrBytes, { model: "nuclei" });
//   // res = {labels: Uint16Array|Uint32Array, width, height, count, measurements, summary, ...}
//   const csv = await seg.export("csv");               // Blob (labels, mask, overlay, csv, coco, rois, all)
//
// The element shows the full app in an iframe (attribute `hidden-app` hides it
// and keeps only the API) and talks to it with postMessage: the page's
// window.piximi runs inside the iframe, so the embedding page needs no
// special headers, and images never leave the visitor's machine.
const TAG = "piximi-segmenter";

class PiximiSegmenter extends HTMLElement {
  #frame = null;
  #pending = new Map();
  #next = 1;
  #origin = "*";
  #readyResolve = null;
  ready = new Promise((r) => { this.#readyResolve = r; });

  connectedCallback() {
    if (this.#frame) return;
    const base = new URL(this.getAttribute("src") || "./", document.baseURI);
    const url = new URL("index.html", base.href.endsWith("/") ? base : base.href + "/");
    url.searchParams.set("embed", "1");
    for (const p of ["backend", "threads"]) if (this.hasAttribute(p)) url.searchParams.set(p, this.getAttribute(p));
    this.#origin = url.origin;
    const frame = document.createElement("iframe");
    frame.src = url.href;
    frame.title = "piximi-py segmenter";
    frame.allow = "cross-origin-isolated";
    frame.style.cssText = "width:100%;height:100%;min-height:" + (this.hasAttribute("hidden-app") ? "0" : "720px") + ";border:0";
    if (this.hasAttribute("hidden-app")) frame.style.display = "none";
    window.addEventListener("message", (e) => this.#onMessage(e));
    this.append(frame);
    this.#frame = frame;
    this.#call("ready").then((info) => {
      this.#readyResolve(info);
      this.dispatchEvent(new CustomEvent("ready", { detail: info }));
    });
  }

  #onMessage(e) {
    if (e.source !== this.#frame?.contentWindow || e.data?.piximi !== 1) return;
    const { id, ok, result, error } = e.data;
    if (e.data.type === "loaded") return;
    const p = this.#pending.get(id);
    if (!p) return;
    this.#pending.delete(id);
    if (ok) p.resolve(result);
    else p.reject(Object.assign(new Error(error?.message || "error"), { name: error?.name || "Error" }));
  }

  async #call(type, payload = {}, transfer = []) {
    // the iframe may not listen yet: resend "ready" until it answers
    const id = this.#next++;
    const answer = new Promise((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    const send = () => this.#frame.contentWindow?.postMessage({ piximi: 1, id, type, ...payload }, this.#origin, transfer);
    if (type === "ready") {
      const timer = setInterval(send, 250);
      answer.finally(() => clearInterval(timer));
    }
    send();
    return answer;
  }

  async models(options = {}) { await this.ready; return this.#call("models", { options }); }

  async segment(input, options = {}) {
    await this.ready;
    let bytes = input;
    if (input instanceof Blob) bytes = new Uint8Array(await input.arrayBuffer());
    else if (input instanceof ArrayBuffer) bytes = new Uint8Array(input);
    const filename = options.filename || input?.name || null;
    const copy = new Uint8Array(bytes); // transferred to the iframe
    return this.#call("segment", { data: copy, options: { ...options, filename } }, [copy.buffer]);
  }

  async export(kind, options = {}) {
    await this.ready;
    const r = await this.#call("export", { kind, options });
    const blob = new Blob([r.data], { type: r.mime });
    blob.filename = r.name;
    return blob;
  }
}

if (!customElements.get(TAG)) customElements.define(TAG, PiximiSegmenter);
export { PiximiSegmenter };
