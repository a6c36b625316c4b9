// <shelfsight-recs user="u-1" token="…" k="8" api="https://recs.example.com" key="pk_…" live>
//
// A dependency-free web component that shows a shopper's recommendations as product cards,
// reports impressions and clicks to POST /v1/events, and re-renders live over Server-Sent
// Events when the shopper's profile changes. `api` defaults to the page's own origin; `key`
// is a publishable key (it may post click events only); `token` is the shopper token the
// store's back end minted for this shopper (docs/recommender.md). Clicking a card fires a
// `shelfsight-click` event (detail: the item) that the page can turn into navigation.
(() => {
  "use strict";

  const STYLE = `
    :host { display: block; font-family: system-ui, sans-serif; }
    .row { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
    .card { border: 1px solid #e3e3e3; border-radius: 10px; padding: 10px; background: #fff; cursor: pointer;
            display: flex; flex-direction: column; gap: 6px; transition: box-shadow .15s; }
    .card:hover, .card:focus { box-shadow: 0 2px 10px rgba(0,0,0,.15); outline: none; }
    .card img { width: 100%; aspect-ratio: 1; object-fit: contain; background: #f6f6f6; border-radius: 6px;
                image-rendering: auto; }
    .title { font-size: 14px; font-weight: 600; color: #222; }
    .price { font-size: 14px; color: #0a6; }
    .reason { font-size: 12px; color: #666; }
    .status { font-size: 13px; color: #888; padding: 8px 0; }
  `;

  const newId = () =>
    (globalThis.crypto && crypto.randomUUID) ? crypto.randomUUID()
      : "id-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12);

  function sessionId() {
    try {
      let id = sessionStorage.getItem("shelfsight-session");
      if (!id) { id = "s-" + newId(); sessionStorage.setItem("shelfsight-session", id); }
      return id;
    } catch (_) { return "s-" + newId(); }
  }

  function formatPrice(item) {
    if (item.price == null) return "";
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: item.currency || "EUR" }).format(item.price);
    } catch (_) { return item.price.toFixed(2) + " " + (item.currency || ""); }
  }

  class ShelfsightRecs extends HTMLElement {
    static get observedAttributes() { return ["user", "token", "k", "category", "api", "live"]; }

    constructor() {
      super();
      this.attachShadow({ mode: "open" });
      this.shadowRoot.innerHTML = `<style>${STYLE}</style><div class="status" part="status">Loading…</div><div class="row" part="row"></div>`;
      this._seen = new Set();
      this._session = sessionId();
      this._observer = ("IntersectionObserver" in globalThis)
        ? new IntersectionObserver((entries) => this._onVisible(entries), { threshold: 0.5 }) : null;
    }

    get api() { return (this.getAttribute("api") || "").replace(/\/$/, ""); }
    get user() { return this.getAttribute("user") || ""; }
    // A shopper token from the store's back end; needed when the API has SHELFSIGHT_SHOPPER_TOKEN_SECRET.
    get token() { return this.getAttribute("token") || ""; }
    get k() { return Math.max(1, Math.min(100, parseInt(this.getAttribute("k") || "8", 10) || 8)); }

    _query() {
      const params = new URLSearchParams({ k: String(this.k) });
      const category = this.getAttribute("category");
      if (category) params.set("category", category);
      return params;
    }

    connectedCallback() { this._start(); }
    disconnectedCallback() { this._stop(); }
    attributeChangedCallback(_name, before, after) { if (this.isConnected && before !== after) this._start(); }

    _stop() {
      if (this._source) { this._source.close(); this._source = null; }
      if (this._observer) this._observer.disconnect();
    }

    _start() {
      this._stop();
      if (!this.user) { this._status("No shopper given (set the user attribute)."); return; }
      const base = `${this.api}/v1/users/${encodeURIComponent(this.user)}/recommendations`;
      if (this.hasAttribute("live") && "EventSource" in globalThis) {
        const params = this._query();
        if (this.token) params.set("token", this.token);  // EventSource cannot send headers
        this._source = new EventSource(`${base}/stream?${params}`);
        this._source.addEventListener("recommendations", (e) => this._render(JSON.parse(e.data)));
        this._source.onerror = () => this._status(this._items ? "" : "Reconnecting…");
      } else {
        fetch(`${base}?${this._query()}`, { headers: this.token ? { "X-Shopper-Token": this.token } : {} })
          .then((r) => r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`)))
          .then((answer) => this._render(answer))
          .catch((err) => this._status(`Recommendations unavailable (${err.message}).`));
      }
    }

    _status(text) { this.shadowRoot.querySelector(".status").textContent = text; }

    _render(answer) {
      this._items = answer.items || [];
      this._requestId = answer.request_id;
      this._experiment = answer.experiment || null;  // sent back with each event; credit goes by request_id
      const row = this.shadowRoot.querySelector(".row");
      if (this._observer) this._observer.disconnect();
      row.replaceChildren();
      this._status(this._items.length ? "" : "Nothing to recommend yet.");
      this._items.forEach((item, position) => {
        const card = document.createElement("article");
        card.className = "card";
        card.tabIndex = 0;
        card.setAttribute("part", "card");
        card.dataset.productId = item.product_id;
        card.dataset.position = String(position);
        const img = document.createElement("img");
        img.alt = item.title || item.product_id;
        img.loading = "lazy";
        if (item.image_url) img.src = /^https?:/.test(item.image_url) ? item.image_url : this.api + item.image_url;
        const title = document.createElement("div"); title.className = "title"; title.textContent = item.title || item.product_id;
        const price = document.createElement("div"); price.className = "price"; price.textContent = formatPrice(item);
        const reason = document.createElement("div"); reason.className = "reason"; reason.textContent = item.reason;
        card.append(img, title, price, reason);
        const open = () => this._onClick(item, position);
        card.addEventListener("click", open);
        card.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
        row.append(card);
        if (this._observer) this._observer.observe(card);
      });
      this.dispatchEvent(new CustomEvent("shelfsight-render", { detail: answer, bubbles: true, composed: true }));
    }

    _onVisible(entries) {
      const shown = [];
      for (const entry of entries) {
        if (!entry.isIntersecting) continue;
        const id = entry.target.dataset.productId;
        const key = `${this._requestId}:${id}`;
        if (this._seen.has(key)) continue;
        this._seen.add(key);
        shown.push(this._event(id, "impression", parseInt(entry.target.dataset.position, 10)));
      }
      if (shown.length) this._send(shown);
    }

    _onClick(item, position) {
      this._send([this._event(item.product_id, "click", position)]);
      this.dispatchEvent(new CustomEvent("shelfsight-click", { detail: item, bubbles: true, composed: true }));
    }

    _event(productId, kind, position) {
      const context = { widget: "shelfsight-recs", position };
      if (this._requestId) context.request_id = this._requestId;
      if (this._experiment) context.experiment = this._experiment;
      return {
        event_id: newId(), user_id: this.user, product_id: productId, kind,
        occurred_at: new Date().toISOString(), session_id: this._session, context,
      };
    }

    _send(events) {
      const key = this.getAttribute("key");
      if (!key) return;
      fetch(`${this.api}/v1/events`, {
        method: "POST", keepalive: true,
        headers: { "Content-Type": "application/json", "X-API-Key": key, ...(this.token ? { "X-Shopper-Token": this.token } : {}) },
        body: JSON.stringify(events),
      }).then((r) => {
        this.dispatchEvent(new CustomEvent("shelfsight-reported", { detail: { status: r.status, events }, bubbles: true, composed: true }));
      }).catch(() => { /* reporting must never break the page */ });
    }
  }

  if (!customElements.get("shelfsight-recs")) customElements.define("shelfsight-recs", ShelfsightRecs);
})();
