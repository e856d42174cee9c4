// Touchpoint operations dashboard: polls /dashboard/data every second and redraws.
// Charts are plotly.js (served from the installed plotly package); the signal feed is
// plain DOM, capped by the server and rebuilt only when it changed.
"use strict";

(() => {
  const POLL_MS = 1000;
  // the channels themselves come with the figures (data.channels, from the contract)
  const COLORS = {
    web: "#4c78a8", store: "#f58518", callcenter: "#54a24b", campaign: "#b279a2",
    feedback: "#e45756", deadletter: "#c62828",
  };
  const OTHER_COLOR = "#7f7f7f"; // a channel without a color of its own
  const REASON_COLORS = {
    long_wait: "#f58518", bad_outcome: "#e45756", low_rating: "#b279a2",
    negative_text: "#9d755d", web_error: "#4c78a8",
  };
  const SEVERITY_ORDER = ["critical", "high", "watch"];
  const CONFIG = { displayModeBar: false, responsive: true };
  const number = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  const whole = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

  const $ = (id) => document.getElementById(id);
  const state = { updates: 0, last: null, feedKey: "", filter: "" };
  window.touchpointDashboard = state; // for people and tests poking at it

  function layout(extra) {
    return Object.assign({
      margin: { l: 44, r: 8, t: 4, b: 28 },
      font: { size: 11, family: "system-ui, sans-serif" },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      legend: { orientation: "h", y: 1.12, x: 0, font: { size: 10 } },
      xaxis: { gridcolor: "#eef0f3", automargin: true },
      yaxis: { gridcolor: "#eef0f3", rangemode: "tozero", automargin: true },
      uirevision: "keep", // zoom and hidden traces survive the updates
    }, extra || {});
  }

  const drawn = {};
  function draw(id, traces, extra) {
    // Plotting is the page's main cost: a chart whose figures did not change is left as is.
    const key = JSON.stringify([traces, extra || null]);
    if (drawn[id] === key) return;
    drawn[id] = key;
    Plotly.react($(id), traces, layout(extra), CONFIG);
  }

  // a chart with nothing to show says so instead of drawing empty axes
  function nothing(message) {
    return {
      xaxis: { visible: false }, yaxis: { visible: false },
      annotations: [{ text: message, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
        font: { size: 12, color: "#6b7280" } }],
    };
  }

  function text(id, value) {
    const node = $(id);
    if (node.textContent !== value) node.textContent = value;
  }

  function el(tag, cls, content) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const sign = seconds < 0 ? "overdue " : "";
    let s = Math.abs(seconds);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60);
    if (d) return `${sign}${d}d ${h}h`;
    if (h) return `${sign}${h}h ${m}m`;
    return `${sign}${m}m`;
  }

  function utc(seconds) {
    if (!seconds) return "–";
    return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  // -- panels --------------------------------------------------------------------------

  function renderKafka(k, channels) {
    if (!k || !k.rates) {
      text("kpi-rate", "–"); text("kpi-lag", "–"); text("kpi-workers", "–");
      return;
    }
    text("group", `group ${k.group}`);
    const times = k.rates.t.map((t) => new Date(t));
    const traces = channels.map((c) => ({
      x: times, y: k.rates.channels[c] || [], name: c, type: "scatter", mode: "lines",
      line: { color: COLORS[c] || OTHER_COLOR, width: 1.6, shape: "spline", smoothing: 0.6 },
      hovertemplate: `${c}: %{y:.1f}/s<extra></extra>`,
    }));
    const clockAxis = { tickformat: "%H:%M:%S", gridcolor: "#eef0f3" };
    draw("chart-rates", traces, { xaxis: clockAxis,
      yaxis: { title: { text: "events/s" }, rangemode: "tozero", gridcolor: "#eef0f3" } });
    // the headline rate: mean of the last five seconds, smoother than one sample
    const recent = (series) => {
      const tail = series.slice(-5);
      return tail.length ? tail.reduce((a, b) => a + b, 0) / tail.length : 0;
    };
    const total = channels.reduce((sum, c) => sum + recent(k.rates.channels[c] || []), 0);
    text("kpi-rate", times.length ? number.format(total) : "…");
    const dead = recent(k.rates.deadletter || []);
    text("kpi-dead", times.length ? number.format(dead * 60) : "…");
    text("kpi-dead-sub", total > 0 ? `${number.format((100 * dead) / total)} % of arrivals` : "of arrivals");
    draw("chart-dead", [{
      x: times, y: k.rates.deadletter, type: "scatter", mode: "lines", fill: "tozeroy",
      line: { color: COLORS.deadletter, width: 1.4 }, name: "dead letters/s",
      hovertemplate: "%{y:.2f}/s<extra></extra>",
    }], { margin: { l: 44, r: 8, t: 4, b: 20 }, showlegend: false, xaxis: clockAxis });

    const total_lag = k.lag.reduce((sum, r) => sum + r.lag, 0);
    text("kpi-lag", whole.format(total_lag));
    const worst = Object.entries(k.lag_by_topic).sort((a, b) => b[1] - a[1])[0];
    text("kpi-lag-sub", worst && worst[1] > 0 ? `most on ${worst[0]}` : "records behind");
    text("kpi-workers", k.members === null || k.members === undefined ? "–" : String(k.members));

    const topics = [...new Set(k.lag.map((r) => r.topic))];
    const partitions = [...new Set(k.lag.map((r) => r.partition))].sort((a, b) => a - b);
    const z = topics.map((t) => partitions.map((p) => {
      const row = k.lag.find((r) => r.topic === t && r.partition === p);
      return row ? row.lag : null;
    }));
    const most = Math.max(10, ...k.lag.map((r) => r.lag));
    draw("chart-lag", [{
      type: "heatmap", z, x: partitions.map((p) => `p${p}`), y: topics, zmin: 0, zmax: most,
      colorscale: [[0, "#e8f5e9"], [0.02, "#fff3cd"], [0.3, "#f9a03f"], [1, "#c62828"]],
      texttemplate: "%{z}", textfont: { size: 10 }, showscale: false, xgap: 2, ygap: 2,
      hovertemplate: "%{y} %{x}: %{z} behind<extra></extra>",
    }], { margin: { l: 150, r: 8, t: 4, b: 24 }, yaxis: { automargin: true, autorange: "reversed" } });
  }

  function renderSignals(s, eventNow) {
    const open = s.counts.open || {};
    text("kpi-signals", whole.format(s.open_total));
    text("kpi-signals-sub", SEVERITY_ORDER.map((v) => `${open[v] || 0} ${v}`).join(" · "));
    const counts = $("severity-counts");
    counts.replaceChildren(...SEVERITY_ORDER.map((v) => el("span", `pill ${v}`, `${whole.format(open[v] || 0)} ${v}`)),
      el("span", "chip", `${whole.format(sumOf(s.counts.breached))} breached`),
      el("span", "chip", `${whole.format(sumOf(s.counts.resolved))} resolved`));
    const key = JSON.stringify([state.filter, s.feed.map((x) => [x.signal_id, x.severity, x.time_left_s])]);
    if (key === state.feedKey) return;
    state.feedKey = key;
    const wanted = state.filter.toLowerCase();
    const shown = s.feed.filter((x) => !wanted ||
      [x.customer_id, x.signal_id, ...x.reasons, ...x.channels].join(" ").toLowerCase().includes(wanted));
    text("feed-count", `${shown.length} shown of ${whole.format(s.open_total)} open · newest first`
      + (s.open_total > s.feed_limit ? ` (latest ${s.feed_limit})` : ""));
    const items = shown.map((x) => {
      const li = el("li", x.severity);
      li.dataset.signal = x.signal_id;
      li.dataset.customer = x.customer_id;
      li.append(el("span", `pill ${x.severity}`, x.severity));
      li.append(el("span", "who", x.customer_id));
      const left = el("span", "left", x.time_left_s === null ? "no deadline" : `${duration(x.time_left_s)} left`);
      if (x.time_left_s === null) left.classList.add("none");
      else if (x.time_left_s < 2 * 3600) left.classList.add("soon");
      left.title = x.time_left_s === null ? "a watch has no service deadline"
        : "time left before the signal is breached (event time)";
      li.append(left);
      li.append(el("span", "why", `${x.reasons.join(", ")} · ${x.channels.join(", ")} · score ${x.score} · raised ${duration(x.age_s)} ago`));
      return li;
    });
    if (!items.length) items.push(el("li", "empty", eventNow ? "no open signals" : "no events yet"));
    $("feed").replaceChildren(...items);
  }

  function sumOf(bySeverity) {
    return Object.values(bySeverity || {}).reduce((a, b) => a + b, 0);
  }

  function renderDeadletters(d) {
    text("dead-sub", `records/s · reasons in the last ${Math.round(d.window_s / 60)} min`);
    $("dead-reasons").replaceChildren(...(d.by_reason.length ? d.by_reason.map((r) => el("span", "chip", `${r.reason_code} ${whole.format(r.records)}`))
      : [el("span", "chip", "none")]));
    $("dead-latest").replaceChildren(...d.latest.map((r) => {
      const tr = el("tr");
      tr.append(el("td", "when", clock(r.at)), el("td", "code", r.reason_code), el("td", "", r.reason));
      tr.title = `${r.source_topic}[${r.source_partition}]@${r.source_offset} ${r.event_id || ""}`;
      return tr;
    }));
  }

  function renderWaits(waits, windowS) {
    text("waits-sub", `last ${Math.round((windowS || 3600) / 60)} min of event time · minutes`);
    const places = waits.map((w) => w.where);
    const minutes = (v) => (v === null ? null : v / 60);
    const hover = waits.map((w) => `${w.waits} waits · ${w.long_waits} over ${w.long_wait_s / 60} min`
      + (w.abandoned !== null ? ` · ${w.abandoned} abandoned` : "") + ` · max ${Math.round(w.max_s / 60)} min`);
    draw("chart-waits", [
      { type: "bar", x: places, y: waits.map((w) => minutes(w.avg_s)), name: "average", marker: { color: "#4c78a8" },
        customdata: hover, hovertemplate: "%{x}: avg %{y:.1f} min<br>%{customdata}<extra></extra>" },
      { type: "bar", x: places, y: waits.map((w) => minutes(w.p90_s)), name: "90th percentile", marker: { color: "#f58518" },
        customdata: hover, hovertemplate: "%{x}: p90 %{y:.1f} min<br>%{customdata}<extra></extra>" },
    ], waits.length ? { barmode: "group", yaxis: { title: { text: "min" }, rangemode: "tozero", gridcolor: "#eef0f3" },
      xaxis: { tickangle: -30, automargin: true } } : nothing("no queue waits in the last hour"));
  }

  function renderScorecard(card) {
    const rows = card.slice().reverse(); // largest at the top of a horizontal bar chart
    const names = rows.map((r) => r.touchpoint);
    const reasons = Object.keys(REASON_COLORS);
    const traces = reasons.map((reason) => ({
      type: "bar", orientation: "h", y: names, x: rows.map((r) => r.reasons[reason]), name: reason.replace("_", " "),
      marker: { color: REASON_COLORS[reason] },
      customdata: rows.map((r) => [r.negative, r.contacts, (100 * r.share_lost).toFixed(1)]),
      hovertemplate: `${reason}: %{x}<br>%{customdata[0]} of %{customdata[1]} contacts negative (%{customdata[2]} %)<extra></extra>`,
    }));
    draw("chart-score", rows.length ? traces : [], rows.length ? { barmode: "stack", margin: { l: 150, r: 8, t: 4, b: 20 },
      legend: { orientation: "h", y: -0.12, yanchor: "top", x: 0, font: { size: 10 } },
      yaxis: { automargin: true }, xaxis: { gridcolor: "#eef0f3", automargin: true } }
      : nothing("no negative experiences today"));
  }

  function renderCampaigns(c) {
    const rows = c.rows || [];
    const ids = rows.map((r) => r.campaign_id);
    const measures = c.source === "campaign_response"
      ? [["sent", "exposed"], ["opened", "opened"], ["clicked", "clicked"], ["responded", "responded"], ["converted", "converted"]]
      : [["sent", "sent"], ["opened", "opened"], ["clicked", "clicked"]];
    const palette = ["#9ecae9", "#4c78a8", "#f58518", "#54a24b", "#e45756"];
    draw("chart-campaigns", measures.map(([key, label], i) => ({
      type: "bar", x: ids, y: rows.map((r) => r[key]), name: label, marker: { color: palette[i] },
      hovertemplate: `%{x} ${label}: %{y}<extra></extra>`,
    })), rows.length ? { barmode: "group", xaxis: { tickangle: -30, automargin: true } }
      : nothing("no campaign events today"));
    text("campaign-source", c.day_of ? `${utc(c.day_of).slice(0, 10)} · from ${c.source}` : "");
  }

  function renderErrors(d) {
    const problems = Object.entries(d.errors || {}).map(([panel, e]) => `${panel}: ${e}`);
    if (d.kafka && d.kafka.error) problems.push(`kafka: ${d.kafka.error}`);
    text("errors", problems.join(" · "));
  }

  function render(d) {
    text("event-time", `event time ${utc(d.event_time_now)}`);
    renderKafka(d.kafka, d.channels || []);
    const stored = Object.values(d.stored.by_channel).reduce((a, b) => a + b, 0);
    text("kpi-stored", whole.format(stored));
    renderSignals(d.signals, d.event_time_now);
    renderDeadletters(d.deadletters);
    renderWaits(d.waits, d.wait_window_s);
    renderScorecard(d.scorecard);
    renderCampaigns(d.campaigns);
    renderErrors(d);
  }

  function status(cls, label) {
    const node = $("status");
    node.className = `status ${cls}`;
    node.textContent = label;
  }

  // The figures name customers, so the worker asks for an API token. It is typed into
  // the page once per tab, kept in sessionStorage (this origin, this tab) and sent as a
  // header: never in a URL, a cookie or a log.
  const TOKEN_KEY = "touchpoint.apiToken";
  const token = () => sessionStorage.getItem(TOKEN_KEY);

  function askForToken(message) {
    const form = $("token-form");
    $("token-message").textContent = message;
    form.hidden = false;
    $("token-input").focus();
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    $("token-form").hidden = true;
    status("wait", "connecting…");
  });

  async function poll() {
    const started = Date.now();
    try {
      if (!token()) {
        if ($("token-form").hidden) askForToken("The figures need an API token.");
        throw new Error("no API token");
      }
      const response = await fetch("/dashboard/data", {
        cache: "no-store", headers: { Authorization: `Bearer ${token()}` },
      });
      if (response.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        askForToken("The worker did not accept that token.");
        throw new Error("token refused");
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const data = await response.json();
      render(data);
      state.updates += 1;
      state.last = data;
      status("ok", `updated ${clock(data.generated_at)}`);
    } catch (error) {
      status("stale", `not updating: ${error.message}`);
    } finally {
      // one poll a second, however long the last one took
      setTimeout(poll, Math.max(POLL_MS - (Date.now() - started), 100));
    }
  }

  $("feed-filter").addEventListener("input", (event) => {
    state.filter = event.target.value.trim();
    if (state.last) renderSignals(state.last.signals, state.last.event_time_now);
  });
  poll();
})();
