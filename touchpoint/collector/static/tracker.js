/* Touchpoint browser tracker, served by the collector at /v1/tracker.js.
 *
 * <script src="https://collect.example.com/v1/tracker.js" data-key="tpk_..."
 *         data-customer-id="C000123"></script>      (data-customer-id: when the page knows it)
 *
 * Optional: data-endpoint (another collector URL), data-batch-ms (longest an event waits
 * to be sent with others, default 2000).
 *
 * Sends web events to the collector's /v1/events: a page_view on load; a click on an
 * element with data-tp-event="add_to_cart" (or any web type, data-tp-* attributes as its
 * fields, data-tp-attr-* as attributes); a submitted form with data-tp-search (its
 * input named q is the query); and touchpoint.track(type, fields) from the page.
 * Events are batched (data-batch-ms or 20 events) and sent as a text/plain JSON body with the write
 * key in it: a simple request (no CORS preflight) that navigator.sendBeacon can also make
 * when the page is hidden or left. An event that could not be delivered is sent again
 * with the same event_id; the pipeline stores it once.
 */
(function () {
  "use strict";
  if (window.touchpoint && window.touchpoint.version) return; // loaded twice
  var script = document.currentScript;
  if (!script) return;
  var key = script.getAttribute("data-key");
  var endpoint = script.getAttribute("data-endpoint") ||
      new URL("/v1/events", script.src).href;
  var customerId = script.getAttribute("data-customer-id") || null;
  var COOKIE = "tp_aid";
  var MAX_QUEUE = 500, BATCH = 20;
  var EVERY_MS = Math.max(100, Number(script.getAttribute("data-batch-ms")) || 2000);
  var queue = [], sending = false, timer = null, delay = EVERY_MS;

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) {
      return (x + 256).toString(16).slice(1);
    }).join("");
  }

  function anonymousId() {
    var found = document.cookie.match(/(?:^|;\s*)tp_aid=([A-Za-z0-9-]{8,64})/);
    var id = found ? found[1] : uuid();
    // first-party, a year, refreshed on every page: the same visitor across visits
    document.cookie = COOKIE + "=" + id + "; Max-Age=31536000; Path=/; SameSite=Lax" +
        (location.protocol === "https:" ? "; Secure" : "");
    return id;
  }

  var anonymous = anonymousId();
  var session = (function () {
    try {
      var s = sessionStorage.getItem("tp_sid");
      if (!s) { s = uuid(); sessionStorage.setItem("tp_sid", s); }
      return s;
    } catch (e) { return uuid(); }
  })();

  function track(type, fields) {
    var event = {channel: "web", event_id: uuid(), type: type,
                 occurred_at: new Date().toISOString(), anonymous_id: anonymous,
                 session_id: session};
    if (customerId) event.customer_id = customerId;
    fields = fields || {};
    for (var name in fields) {
      if (Object.prototype.hasOwnProperty.call(fields, name)) event[name] = fields[name];
    }
    if (queue.length >= MAX_QUEUE) queue.shift(); // never grow without bound
    queue.push(event);
    if (queue.length >= BATCH) flush();
    else if (!timer) timer = setTimeout(flush, EVERY_MS);
  }

  function body(events) {
    return JSON.stringify({write_key: key, events: events});
  }

  function flush() {
    if (timer) { clearTimeout(timer); timer = null; }
    if (sending || !queue.length) return;
    var events = queue.splice(0, BATCH);
    sending = true;
    fetch(endpoint, {method: "POST", body: body(events), keepalive: true,
                     credentials: "omit", headers: {"Content-Type": "text/plain"}})
      .then(function (response) {
        // 429 and 503 (and 5xx): nothing stored for sure, so the same events go again;
        // 4xx other than 429: the request itself is wrong, sending it again will not help
        if (response.status === 429 || response.status >= 500) throw new Error("retry");
        delay = EVERY_MS;
      })
      .catch(function () {
        queue = events.concat(queue).slice(0, MAX_QUEUE);
        delay = Math.min(delay * 2, 60000); // back off: an outage is not made worse
      })
      .then(function () {
        sending = false;
        if (queue.length && !timer) timer = setTimeout(flush, delay);
      });
  }

  function beacon() {
    // the page is going away: what is queued leaves with sendBeacon, which outlives it
    while (queue.length) {
      var events = queue.splice(0, BATCH);
      var blob = new Blob([body(events)], {type: "text/plain"});
      if (!(navigator.sendBeacon && navigator.sendBeacon(endpoint, blob))) {
        queue = events.concat(queue);
        return;
      }
    }
  }

  function fieldsOf(element) {
    var fields = {}, attributes = {};
    for (var i = 0; i < element.attributes.length; i++) {
      var a = element.attributes[i];
      if (a.name.indexOf("data-tp-attr-") === 0) attributes[a.name.slice(13)] = a.value;
      else if (a.name.indexOf("data-tp-") === 0 && a.name !== "data-tp-event") {
        var name = a.name.slice(8).replace(/-/g, "_");
        fields[name] = name === "amount" ? Number(a.value) : a.value;
      }
    }
    if (Object.keys(attributes).length) fields.attributes = attributes;
    return fields;
  }

  document.addEventListener("click", function (e) {
    var element = e.target && e.target.closest && e.target.closest("[data-tp-event]");
    if (element) track(element.getAttribute("data-tp-event"), fieldsOf(element));
  }, true);
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form || !form.hasAttribute || !form.hasAttribute("data-tp-search")) return;
    var input = form.elements && form.elements.q;
    track("search", {url: location.href,
                     attributes: {query: input ? String(input.value).slice(0, 1024) : ""}});
  }, true);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") beacon();
  });
  window.addEventListener("pagehide", beacon);

  window.touchpoint = {
    version: 1,
    track: track,
    identify: function (id) { customerId = id ? String(id) : null; },
    flush: flush
  };
  track("page_view", {url: location.href, referrer: document.referrer || undefined});
})();
