// The cart page (served by cart_read/page.py). Reads from this origin's read API, sends commands
// to the write API (data-write-url), follows the cart on the SSE stream. Every value from a
// server reaches the DOM as text (textContent / text nodes), never as markup.
"use strict";

(function () {
  const body = document.body;
  const PROFILE = body.dataset.profile;
  const WRITE_URL = body.dataset.writeUrl;
  const PAGE_SIZE = Number(body.dataset.pageSize) || 10;
  const QTY_MAX = Number(body.dataset.qtyMax) || 10000;
  const ORDERS_PAGE = 5;
  const RETRY_MAX_MS = 5000;
  const $ = (id) => document.getElementById(id);

  const state = {
    session: 0, // bumped on each customer switch: answers for an older one are dropped
    customer: null,
    token: null,
    cart: null,
    products: new Map(), // productId -> product, from every catalog page and lookup seen
    cursors: [null], // the cursor of each catalog page visited; the last is the current one
    nextCursor: null,
    ordersCursor: null,
    lastOrder: null, // cartId of the last checked-out cart seen on the stream
    seen: null, // eventIds of the rejections already shown (null until the first cart)
    stream: null,
    retryTimer: null,
    retryMs: 500,
  };

  // ------------------------------------------------------------------ DOM helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    node.append(...children); // strings become text nodes
    return node;
  }

  // Re-rendering a list must not throw the keyboard user's focus away.
  function keepingFocus(render) {
    const id = document.activeElement && document.activeElement.id;
    render();
    if (id && document.activeElement !== $(id) && $(id)) $(id).focus();
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function news(message) {
    $("news").textContent = message;
  }

  function setConnection(text, down) {
    const p = $("connection");
    p.textContent = text;
    p.classList.toggle("down", down);
  }

  function items(n) {
    return n + (n === 1 ? " item" : " items");
  }

  function itemDomId(prefix, itemId) {
    return prefix + "-" + itemId.replace(/[^A-Za-z0-9_-]/g, (c) => "_" + c.charCodeAt(0));
  }

  // ------------------------------------------------------------------ HTTP

  function authHeaders() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  function errorText(doc, status) {
    const error = doc && doc.error;
    if (error && error.message) return error.message;
    return "HTTP " + status;
  }

  // GET from the read API: the JSON body, null on 404, an Error with the server's words else.
  async function readApi(path) {
    let res;
    try {
      res = await fetch(path, { headers: authHeaders(), cache: "no-store" });
    } catch (e) {
      throw new Error("The read API cannot be reached.");
    }
    const doc = await res.json().catch(() => null);
    if (res.status === 404) return null;
    if (!res.ok) throw new Error(errorText(doc, res.status));
    return doc;
  }

  // POST a command to the write API; true once it is accepted (202).
  async function command(name, payload, what) {
    clearError();
    let res;
    try {
      res = await fetch(WRITE_URL + "/api/v1/" + name, {
        method: "POST",
        headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
        body: JSON.stringify(Object.assign({ customerId: state.customer }, payload)),
      });
    } catch (e) {
      showError("The write API (" + WRITE_URL + ") cannot be reached: " + what +
        " was not sent. Try again when it is back.");
      return false;
    }
    if (res.status !== 202) {
      const doc = await res.json().catch(() => null);
      showError(what + " was refused: " + errorText(doc, res.status));
      return false;
    }
    news("Sent: " + what + ".");
    return true;
  }

  function customerPath(suffix) {
    return "/api/v1/" + encodeURIComponent(state.customer) + (suffix || "");
  }

  // ------------------------------------------------------------------ words

  function productName(itemId) {
    const p = state.products.get(itemId);
    if (p) return p.productName;
    const line = cartLines().find((l) => l.itemId === itemId);
    return line ? line.itemName : "item " + itemId;
  }

  function cartLines() {
    const cart = state.cart;
    return cart && cart.status === "OPEN" ? cart.lineItems || [] : [];
  }

  function inCart(itemId) {
    const line = cartLines().find((l) => l.itemId === itemId);
    return line ? line.qty : 0;
  }

  // A rejection in words, from what the page knows of the catalog and the cart.
  function rejectionWords(r) {
    const name = r.itemId ? productName(r.itemId) : "";
    const names = (r.itemIds || []).map(productName).join(", ");
    const product = r.itemId ? state.products.get(r.itemId) : null;
    switch (r.reason) {
      case "UNKNOWN_PRODUCT":
        return "Could not add " + name + ": it is not in the catalog.";
      case "INSUFFICIENT_STOCK": {
        if (!product) return "Could not add " + name + ": not enough in stock.";
        const left = Math.max(product.stockQty - inCart(r.itemId), 0);
        return "Could not add " + name + ": only " + left + " left.";
      }
      case "CART_LIMIT":
        return "Could not add " + name + ": a cart holds at most 200 products and " +
          QTY_MAX + " of each.";
      case "NOT_IN_CART":
        return "Could not remove " + name + ": it is not in your cart.";
      case "NO_OPEN_CART":
        return r.type === "CHECKOUT"
          ? "Could not check out: you have no open cart."
          : "Could not change the cart: you have no open cart.";
      case "EMPTY_CART":
        return "Could not check out: your cart is empty.";
      case "VERSION_CONFLICT":
        return "Not done: your cart changed meanwhile. Look at it again and retry.";
      case "OUT_OF_STOCK": {
        const parts = (r.itemIds || []).map((id) => {
          const p = state.products.get(id);
          return p ? "only " + p.available + " " + p.productName + " left" : productName(id) +
            " is out of stock";
        });
        return "Could not check out: " + (parts.join("; ") || "out of stock") + ".";
      }
      case "PRODUCT_UNAVAILABLE":
        return "Could not check out: " + (names || "a product") + " is no longer sold.";
      default:
        return "A command was rejected: " + r.reason + ".";
    }
  }

  // ------------------------------------------------------------------ catalog

  async function loadCatalog() {
    const session = state.session;
    const cursor = state.cursors[state.cursors.length - 1];
    let path = "/api/v1/products?limit=" + PAGE_SIZE;
    if (cursor) path += "&cursor=" + encodeURIComponent(cursor);
    let page;
    try {
      page = await readApi(path);
    } catch (e) {
      if (session === state.session) showError("The catalog cannot be loaded: " + e.message);
      return;
    }
    if (session !== state.session || !page) return;
    for (const p of page.items) state.products.set(p.productId, p);
    state.nextCursor = page.nextCursor;
    keepingFocus(() => renderCatalog(page.items));
  }

  function renderCatalog(items) {
    const list = $("products");
    list.replaceChildren(...items.map(productRow));
    $("page-number").textContent = "Page " + state.cursors.length;
    $("prev-page").disabled = state.cursors.length <= 1;
    $("next-page").disabled = !state.nextCursor;
  }

  function productRow(p) {
    const qtyId = itemDomId("add-qty", p.productId);
    const qty = el("input", {
      id: qtyId, type: "number", inputmode: "numeric", min: "1", max: String(QTY_MAX),
      value: "1", required: "", "aria-label": "Quantity of " + p.productName,
    });
    const form = el("form", { class: "act", novalidate: "" },
      el("label", { for: qtyId }, "Qty"),
      qty,
      el("button", { type: "submit", id: itemDomId("add", p.productId),
        "aria-label": "Add " + p.productName }, "Add"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const n = readQty(qty, QTY_MAX);
      if (n !== null) {
        command("add", { itemId: p.productId, qty: n }, "add " + n + " × " + p.productName);
      }
    });
    return el("li", { "data-product-id": p.productId },
      el("span", { class: "name" }, p.productName),
      el("span", { class: "facts" }, "Price " + p.price + " · " + p.available + " available"),
      form);
  }

  // A whole number in 1..max from an input, else null with the input marked and the words shown.
  function readQty(input, max) {
    const text = input.value.trim();
    const n = Number(text);
    if (!/^[0-9]+$/.test(text) || n < 1 || n > max) {
      input.setAttribute("aria-invalid", "true");
      showError("The quantity must be a whole number from 1 to " + max + ".");
      input.focus();
      return null;
    }
    input.removeAttribute("aria-invalid");
    return n;
  }

  // Products a rejection names that the page has not seen (or whose stock may have moved).
  async function lookUpProducts(ids) {
    await Promise.all(ids.map(async (id) => {
      try {
        const p = await readApi("/api/v1/products/" + encodeURIComponent(id));
        if (p) state.products.set(id, p);
      } catch (e) {
        /* the words fall back to the id */
      }
    }));
  }

  // ------------------------------------------------------------------ cart

  function customerVersion(doc) {
    return doc.customer ? doc.customer.version : doc.version;
  }

  async function onCart(doc, session) {
    if (session !== state.session) return;
    if (state.cart && customerVersion(doc) <= customerVersion(state.cart)) return;
    const initial = state.cart === null; // what the page opened on is not news
    state.cart = doc;
    keepingFocus(() => renderCart(doc));
    await onRejections(doc, session);
    if (doc.status === "CHECKED_OUT" && doc.cartId !== state.lastOrder) {
      state.lastOrder = doc.cartId;
      if (!initial) {
        news("Order " + doc.cartId + " placed: " + items(doc.totalQty) + ", total " +
          doc.totalPrice + ".");
        loadOrders(true, doc.cartId);
        loadCatalog(); // stock was reserved
      }
    }
  }

  function renderCart(doc) {
    const lines = cartLines();
    $("cart-lines").replaceChildren(...lines.map(cartRow));
    $("cart-empty").hidden = lines.length > 0;
    const open = doc && doc.status === "OPEN";
    $("cart-qty").textContent = open ? String(doc.totalQty) : "0";
    $("cart-total").textContent = open ? doc.totalPrice : "0.00";
    $("checkout").disabled = lines.length === 0;
  }

  function cartRow(line) {
    const qtyId = itemDomId("remove-qty", line.itemId);
    const qty = el("input", {
      id: qtyId, type: "number", inputmode: "numeric", min: "1", max: String(line.qty),
      value: "1", required: "", "aria-label": "Quantity of " + line.itemName + " to remove",
    });
    const form = el("form", { class: "act", novalidate: "" },
      el("label", { for: qtyId }, "Qty"),
      qty,
      el("button", { type: "submit", class: "secondary", id: itemDomId("remove", line.itemId),
        "aria-label": "Remove " + line.itemName }, "Remove"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const n = readQty(qty, QTY_MAX);
      if (n !== null) {
        command("remove", { itemId: line.itemId, qty: n }, "remove " + n + " × " + line.itemName);
      }
    });
    let facts = line.qty + " × " + line.unitPrice + " = " + line.totalPrice;
    if (line.priceChanged) facts += " (added at " + line.addedPrice + ")";
    return el("li", { "data-item-id": line.itemId },
      el("span", { class: "name" }, line.itemName),
      el("span", { class: "facts" }, facts),
      form);
  }

  async function onRejections(doc, session) {
    const all = (doc.customer ? doc.customer.rejected : doc.rejected) || [];
    const first = state.seen === null;
    const seen = state.seen || new Set();
    const fresh = all.filter((r) => !seen.has(r.eventId));
    state.seen = new Set(all.map((r) => r.eventId));
    // Stock words need the products' current numbers.
    const ids = new Set();
    for (const r of first ? all : fresh) {
      if (r.reason === "OUT_OF_STOCK" || r.reason === "INSUFFICIENT_STOCK" ||
          !state.products.has(r.itemId)) {
        for (const id of [r.itemId, ...(r.itemIds || [])]) if (id) ids.add(id);
      }
    }
    if (ids.size) await lookUpProducts([...ids]);
    if (session !== state.session) return;
    const words = all.slice().reverse().map((r) => el("li", {}, rejectionWords(r)));
    $("rejections").replaceChildren(...words);
    $("no-rejections").hidden = all.length > 0;
    if (!first && fresh.length) showError(fresh.map(rejectionWords).join(" "));
  }

  // ------------------------------------------------------------------ live stream

  function stopLive() {
    if (state.stream) state.stream.close();
    state.stream = null;
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
  }

  async function streamUrl() {
    const url = customerPath("/events");
    if (PROFILE !== "secure") return url;
    // EventSource cannot send a header: trade the token for a short-lived stream ticket.
    let res;
    try {
      res = await fetch(customerPath("/events/ticket"), {
        method: "POST", headers: authHeaders(), cache: "no-store",
      });
    } catch (e) {
      throw new Error("the read API cannot be reached");
    }
    const doc = await res.json().catch(() => null);
    if (!res.ok || !doc || !doc.url) throw new Error(errorText(doc, res.status));
    return doc.url; // the stream's path with the ticket (a ticket, never the token, in the URL)
  }

  async function startLive() {
    stopLive();
    const session = state.session;
    let url;
    try {
      url = await streamUrl();
    } catch (e) {
      if (session === state.session) reconnectLater("Live updates unavailable (" + e.message + ")");
      return;
    }
    if (session !== state.session) return;
    const source = new EventSource(url);
    state.stream = source;
    const onData = (ev) => {
      let doc;
      try {
        doc = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (doc && doc.cartId) onCart(doc, session);
    };
    source.addEventListener("message", onData);
    source.addEventListener("cart", onData);
    source.addEventListener("open", () => {
      if (session !== state.session) return;
      state.retryMs = 500;
      setConnection("Live: your cart updates by itself.", false);
    });
    source.addEventListener("error", () => {
      if (session !== state.session) return;
      if (source.readyState === EventSource.CLOSED) {
        reconnectLater("Live updates lost");
      } else {
        // The browser reconnects by itself (and resumes with Last-Event-ID).
        setConnection("Live updates lost: reconnecting…", true);
      }
    });
  }

  // The stream was refused (e.g. 503 while the read API restarts): try again, backing off.
  function reconnectLater(why) {
    stopLive();
    const wait = state.retryMs;
    state.retryMs = Math.min(state.retryMs * 2, RETRY_MAX_MS);
    setConnection(why + ": reconnecting in " + Math.round(wait / 1000) + " s…", true);
    state.retryTimer = setTimeout(startLive, wait);
  }

  // ------------------------------------------------------------------ orders

  async function loadOrders(reset, expectCartId, attempt) {
    const session = state.session;
    let path = customerPath("/orders?limit=" + ORDERS_PAGE);
    if (!reset && state.ordersCursor) path += "&cursor=" + encodeURIComponent(state.ordersCursor);
    let page;
    try {
      page = await readApi(path);
    } catch (e) {
      if (session === state.session) showError("Past orders cannot be loaded: " + e.message);
      return;
    }
    if (session !== state.session) return;
    const items = page ? page.items : [];
    // The order lands in PostgreSQL a moment after the stream showed it.
    if (expectCartId && !items.some((o) => o.cartId === expectCartId) && (attempt || 0) < 20) {
      setTimeout(() => loadOrders(reset, expectCartId, (attempt || 0) + 1), 250);
      return;
    }
    state.ordersCursor = page ? page.nextCursor : null;
    const rows = items.map(orderRow);
    if (reset) $("orders").replaceChildren(...rows);
    else $("orders").append(...rows);
    $("no-orders").hidden = $("orders").children.length > 0;
    $("more-orders").hidden = !state.ordersCursor;
  }

  function orderRow(order) {
    const lines = (order.lineItems || []).map((l) =>
      el("li", {}, l.qty + " × " + l.itemName + " at " + l.unitPrice + " = " + l.totalPrice));
    return el("li", { "data-cart-id": order.cartId },
      el("span", { class: "name" }, "Order " + order.cartId),
      " · " + items(order.totalQty) + " · total ",
      el("strong", {}, order.totalPrice),
      el("ul", {}, ...lines));
  }

  // ------------------------------------------------------------------ who

  function tokenSubject(token) {
    const part = token.split(".")[1] || "";
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "===".slice((b64.length + 3) % 4);
    const claims = JSON.parse(atob(padded));
    return typeof claims.sub === "string" ? claims.sub : null;
  }

  function who() {
    if (PROFILE === "secure") {
      const token = $("token").value.trim();
      let sub = null;
      try {
        sub = tokenSubject(token);
      } catch (e) {
        sub = null;
      }
      if (!sub) {
        $("token").setAttribute("aria-invalid", "true");
        $("token").focus();
        showError("That is not a token: paste the whole bearer token (three parts with dots).");
        return null;
      }
      $("token").removeAttribute("aria-invalid");
      return { customer: sub, token };
    }
    const input = $("customer-id");
    const id = input.value.trim();
    if (!new RegExp("^(?:" + body.dataset.idPattern + ")$").test(id)) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
      showError("A customer id is 1–64 letters, digits or . _ : @ -");
      return null;
    }
    input.removeAttribute("aria-invalid");
    return { customer: id, token: null };
  }

  function open(customer, token) {
    stopLive();
    clearError();
    state.session += 1;
    Object.assign(state, {
      customer, token, cart: null, cursors: [null], nextCursor: null, ordersCursor: null,
      lastOrder: null, seen: null, retryMs: 500,
    });
    $("cart-customer").textContent = "(customer " + customer + ")";
    $("shop").hidden = false;
    news("");
    renderCart(null);
    $("rejections").replaceChildren();
    $("no-rejections").hidden = false;
    $("orders").replaceChildren();
    $("no-orders").hidden = false;
    if (PROFILE !== "secure") history.replaceState(null, "", "#customer=" + encodeURIComponent(customer));
    setConnection("Connecting to live updates…", false);
    loadCatalog();
    loadOrders(true);
    startLive();
  }

  function init() {
    for (const node of document.querySelectorAll("[data-profile-only]")) {
      node.hidden = node.dataset.profileOnly !== PROFILE;
    }
    $("who").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const chosen = who();
      if (chosen) open(chosen.customer, chosen.token);
    });
    $("checkout").addEventListener("click", () => command("checkout", {}, "check out"));
    $("next-page").addEventListener("click", () => {
      if (!state.nextCursor) return;
      state.cursors.push(state.nextCursor);
      loadCatalog();
    });
    $("prev-page").addEventListener("click", () => {
      if (state.cursors.length <= 1) return;
      state.cursors.pop();
      loadCatalog();
    });
    $("more-orders").addEventListener("click", () => loadOrders(false));
    const match = /^#customer=(.+)$/.exec(location.hash);
    if (PROFILE !== "secure" && match) {
      $("customer-id").value = decodeURIComponent(match[1]);
      const chosen = who();
      if (chosen) open(chosen.customer, null);
    }
  }

  init();
})();
