/* Charts of the statistics page (Chart.js). The first data set comes from the JSON data block
 * the page renders; afterwards /stats.json is fetched every minute and the charts updated. */
(function () {
  "use strict";
  if (typeof Chart === "undefined") return;

  var dataBlock = document.getElementById("stats-data");
  var labelBlock = document.getElementById("stats-labels");
  if (!dataBlock) return;
  var labels = JSON.parse(labelBlock.textContent);
  var STAGES = ["download", "convert", "transcribe", "retrieve", "answer", "speak", "store", "send", "end_to_end"];
  var COLORS = {
    text: "#6ea8fe", audio: "#20c997", other: "#adb5bd",
    sent: "#6ea8fe", delivered: "#20c997", read: "#198754", failed: "#dc3545",
    p50: "#6ea8fe", p95: "#ffc107", error: "#dc3545"
  };
  var EXTRA_COLORS = ["#d63384", "#fd7e14", "#6f42c1", "#0dcaf0", "#adb5bd", "#ffda6a"];

  Chart.defaults.color = "#adb5bd";
  Chart.defaults.borderColor = "rgba(255, 255, 255, 0.08)";
  Chart.defaults.maintainAspectRatio = false;
  if (window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches) {
    Chart.defaults.animation = false;
  }

  function shortDate(iso) {  // "2026-03-09" -> "09/03"
    return iso.slice(8, 10) + "/" + iso.slice(5, 7);
  }

  function messagesData(stats) {
    var days = stats.messages.per_day;
    return {
      labels: days.map(function (d) { return shortDate(d.date); }),
      datasets: [
        { label: "Texto", data: days.map(function (d) { return d.text; }), backgroundColor: COLORS.text, stack: "m" },
        { label: "Áudio", data: days.map(function (d) { return d.audio; }), backgroundColor: COLORS.audio, stack: "m" },
        { label: "Outros", data: days.map(function (d) { return d.other; }), backgroundColor: COLORS.other, stack: "m" }
      ]
    };
  }

  function deliveryData(stats) {
    var keys = Object.keys(stats.delivery.by_status);
    var extra = 0;
    return {
      labels: keys.map(function (k) { return labels.statuses[k] || k; }),
      datasets: [{
        data: keys.map(function (k) { return stats.delivery.by_status[k]; }),
        backgroundColor: keys.map(function (k) { return COLORS[k] || EXTRA_COLORS[extra++ % EXTRA_COLORS.length]; }),
        borderWidth: 0
      }]
    };
  }

  function latencyData(stats) {
    var source = function (stage) { return stage === "end_to_end" ? stats.latency.end_to_end : stats.latency.stages[stage]; };
    return {
      labels: STAGES.map(function (s) { return labels.stages[s] || s; }),
      datasets: [
        { label: "p50", data: STAGES.map(function (s) { return source(s).p50; }), backgroundColor: COLORS.p50 },
        { label: "p95", data: STAGES.map(function (s) { return source(s).p95; }), backgroundColor: COLORS.p95 }
      ]
    };
  }

  function errorsData(stats) {
    var kinds = Object.keys(stats.turns.errors_by_kind);
    return {
      labels: kinds.length ? kinds : ["sem erros"],
      datasets: [{ label: "Atendimentos", data: kinds.length ? kinds.map(function (k) { return stats.turns.errors_by_kind[k]; }) : [0],
                   backgroundColor: COLORS.error }]
    };
  }

  var stats = JSON.parse(dataBlock.textContent);
  var charts = {
    messages: new Chart(document.getElementById("chart-messages"), {
      type: "bar", data: messagesData(stats),
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } }
    }),
    delivery: new Chart(document.getElementById("chart-delivery"), {
      type: "doughnut", data: deliveryData(stats),
      options: { plugins: { legend: { position: "bottom" } } }
    }),
    latency: new Chart(document.getElementById("chart-latency"), {
      type: "bar", data: latencyData(stats),
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: "ms" } } } }
    }),
    errors: new Chart(document.getElementById("chart-errors"), {
      type: "bar", data: errorsData(stats),
      options: { indexAxis: "y", plugins: { legend: { display: false } },
                 scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } }
    })
  };

  function setCards(s) {
    var values = { users: s.users.total, new_today: s.users.new_today, active_7d: s.users.active_7d,
                   messages: s.messages.last_30_days.total, leads: s.leads.total, handoffs_open: s.handoffs.open };
    Object.keys(values).forEach(function (key) {
      var el = document.querySelector('[data-stat="' + key + '"]');
      if (el) el.textContent = values[key];
    });
    var generated = document.getElementById("stats-generated");
    if (generated) {
      generated.textContent = new Date(s.generated_at).toLocaleString("pt-BR", { timeZone: "America/Sao_Paulo" });
    }
  }

  // An empty chart is replaced by its Portuguese empty-state text (rendered by the page).
  var EMPTY = {
    messages: function (s) { return !s.messages.last_30_days.total; },
    delivery: function (s) { return !s.delivery.total; },
    latency: function (s) { return !s.latency.sample_turns; },
    errors: function (s) { return !Object.keys(s.turns.errors_by_kind).length; }
  };

  function setEmptyStates(s) {
    Object.keys(EMPTY).forEach(function (key) {
      var empty = EMPTY[key](s);
      var text = document.querySelector('[data-empty-for="' + key + '"]');
      if (text) text.classList.toggle("d-none", !empty);
      var box = charts[key].canvas.parentNode;
      box.classList.toggle("d-none", empty);
    });
  }

  function refresh() {
    fetch(dataBlock.getAttribute("data-url"), {
      headers: { Accept: "application/json" }, credentials: "same-origin"
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    }).then(function (s) {
      charts.messages.data = messagesData(s);
      charts.delivery.data = deliveryData(s);
      charts.latency.data = latencyData(s);
      charts.errors.data = errorsData(s);
      setEmptyStates(s);
      Object.keys(charts).forEach(function (k) { charts[k].update(); });
      setCards(s);
    }).catch(function () { /* keep the last figures; the next refresh tries again */ });
  }

  setInterval(refresh, 60000);
  window.EndrigoStats = { charts: charts, refresh: refresh };
})();
