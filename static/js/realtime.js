/* The status page's realtime card, live: polls /system/realtime-status (login required) every
 * 15 s and runs /test/realtime-audio on request. A file, not inline: the CSP forbids inline scripts. */
(function () {
  "use strict";

  var box = document.getElementById("realtime-live");
  if (!box) return;
  var POLL_MS = 15000;
  var button = document.getElementById("realtime-test");
  var result = document.getElementById("realtime-test-result");
  var REASONS = {
    connect: "conexão", auth: "chave recusada", error_event: "erro do serviço", timeout: "tempo esgotado",
    closed: "conexão caiu", empty_audio: "resposta sem áudio", empty_answer: "resposta vazia",
    conversion: "conversão de áudio", storage: "armazenamento", internal: "erro interno"
  };

  function field(name, text) {
    var node = box.querySelector('[data-field="' + name + '"]');
    if (node) node.textContent = text;
  }

  function ms(value) {
    return value === null || value === undefined ? "—" : (value / 1000).toFixed(1).replace(".", ",") + " s";
  }

  function show(data) {
    field("sessions_today", String(data.sessions_today || 0));
    field("successes", String(data.successes || 0));
    var reasons = Object.keys(data.fallbacks_by_reason || {}).map(function (key) {
      return (REASONS[key] || key) + ": " + data.fallbacks_by_reason[key];
    });
    field("fallbacks", String(data.fallbacks || 0) + (reasons.length ? " (" + reasons.join(", ") + ")" : ""));
    var latency = data.latency_ms || {};
    field("latency", ms(latency.p50) + " / " + ms(latency.p95));
    var last = data.last_error;
    field("last_error", last ? (REASONS[last.reason] || last.reason) + (last.message ? " — " + last.message : "") : "nenhum");
    // Without a key the card's own text says why; a test session could not run.
    if (button) button.hidden = !data.configured;
    box.hidden = false;
  }

  function poll() {
    fetch(box.getAttribute("data-url"), { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data) show(data); })
      .catch(function () { /* offline for a moment: the next poll tries again */ });
  }

  if (button && result) {
    button.addEventListener("click", function () {
      button.disabled = true;
      result.textContent = "Testando…";
      var token = window.EndrigoDashboard ? window.EndrigoDashboard.csrfToken() : "";
      fetch(button.getAttribute("data-url"), {
        method: "POST", credentials: "same-origin",
        headers: { "Accept": "application/json", "X-CSRFToken": token }
      })
        .then(function (response) { return response.json(); })
        .then(function (data) {
          result.textContent = data.ok
            ? "OK: " + ms(data.elapsed_ms) + ", " + String(data.output_seconds).replace(".", ",") + " s de resposta"
            : "Falhou: " + (REASONS[data.error] || data.error) + (data.reason ? " — " + data.reason : "");
        })
        .catch(function () { result.textContent = "Falhou: sem resposta do painel."; })
        .then(function () { button.disabled = false; poll(); });
    });
  }

  poll();
  setInterval(poll, POLL_MS);
})();
