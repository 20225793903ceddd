/* Endrigo Digital dashboard: behaviour shared by every page.
 * Lives in a file because the Content-Security-Policy forbids inline scripts and handlers. */
(function () {
  "use strict";

  // The CSRF token rendered into <meta name="csrf-token"> for logged-in pages; fetch() sends it
  // in the X-CSRFToken header (flask_wtf reads it there).
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Confirmation for forms marked data-confirm (inline onsubmit would break the CSP).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // "Copy" buttons next to the webhook URLs.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var text = button.getAttribute("data-copy");
    var label = button.querySelector(".copy-label");
    var done = function () {
      if (label) {
        label.textContent = "Copiado!";
        setTimeout(function () { label.textContent = "Copiar"; }, 1500);
      }
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
    } else {
      fallbackCopy(text);
      done();
    }
  });

  // Plain-http origins have no Clipboard API: select a temporary field and copy.
  function fallbackCopy(text) {
    var field = document.createElement("textarea");
    field.value = text;
    field.setAttribute("readonly", "");
    field.className = "position-absolute top-0 start-0 opacity-0";
    document.body.appendChild(field);
    field.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing else to try */ }
    document.body.removeChild(field);
  }

  // Human-readable uptime on the status page.
  var uptime = document.getElementById("uptime");
  if (uptime) {
    var seconds = parseInt(uptime.getAttribute("data-seconds"), 10) || 0;
    var days = Math.floor(seconds / 86400), hours = Math.floor(seconds % 86400 / 3600),
        minutes = Math.floor(seconds % 3600 / 60);
    uptime.textContent = days ? days + " d " + hours + " h" : hours ? hours + " h " + minutes + " min" : minutes + " min";
  }

  window.EndrigoDashboard = { csrfToken: csrfToken };
})();
