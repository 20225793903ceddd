/* The chat simulator: sends the operator's message (text or a voice-note file) and polls
 * /simulator/messages.json for the conversation as the pipeline writes it. Bubbles are keyed
 * by message id and updated in place (a voice note gets its transcription a moment later).
 * User text is inserted with textContent, except a message body's body_html: the server's
 * copy of it escaped first and then formatted (app/web/dashboard/formatting.py). */
(function () {
  "use strict";
  var form = document.getElementById("simulator-form");
  if (!form) return;
  var log = document.getElementById("simulator-log");
  var chat = document.getElementById("simulator-chat");
  var empty = document.getElementById("simulator-empty");
  var typing = document.getElementById("simulator-typing");
  var errorBox = document.getElementById("simulator-error");
  var textInput = document.getElementById("simulator-text");
  var audioInput = document.getElementById("simulator-audio");
  var fileLabel = document.getElementById("simulator-file-label");
  var sendButton = document.getElementById("simulator-send");
  var pollUrl = log.getAttribute("data-poll-url");
  var defaultFileLabel = fileLabel.textContent;
  var timer = null;
  var STATUS = { delivered: "entregue", read: "lida", sent: "enviada", failed: "falhou", sending: "enviando",
                 received: "recebida", processing: "processando", answered: "respondida", ignored: "ignorada",
                 queued: "na fila", undelivered: "não entregue" };

  function csrfToken() { return window.EndrigoDashboard ? window.EndrigoDashboard.csrfToken() : ""; }

  function icon(name) {
    var span = document.createElement("span");
    if (window.feather && feather.icons[name]) {
      span.innerHTML = feather.icons[name].toSvg({ width: 14, height: 14 });  // static SVG from the library
    }
    return span;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.classList.toggle("d-none", !message);
  }

  function timeOf(iso) {
    var date = new Date(iso);
    return isNaN(date) ? "" : date.toLocaleTimeString("pt-BR", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function child(parent, className, tag) {
    var el = parent.querySelector(":scope > ." + className.split(" ")[0]);
    if (!el) {
      el = document.createElement(tag || "span");
      el.className = className;
      parent.appendChild(el);
    }
    return el;
  }

  // Create the bubble on first sight; afterwards only the parts that change are updated.
  function upsert(message) {
    var id = "sim-message-" + message.id;
    var bubble = document.getElementById(id);
    var created = !bubble;
    if (created) {
      if (empty) { empty.remove(); empty = null; }
      bubble = document.createElement("div");
      bubble.className = "bubble " + message.direction;
      bubble.id = id;
      bubble.setAttribute("data-kind", message.kind);
      if (message.kind === "audio") {
        var caption = document.createElement("span");
        caption.className = "small text-body-secondary";
        caption.appendChild(icon("mic"));
        caption.appendChild(document.createTextNode(message.direction === "in" ? " Áudio enviado" : " Resposta em áudio"));
        bubble.appendChild(caption);
        if (message.audio_url) {
          var audio = document.createElement("audio");
          audio.controls = true;
          audio.preload = "metadata";
          audio.src = message.audio_url;
          bubble.appendChild(audio);
        }
      } else {
        // body_html is the server's escaped-then-formatted copy of the body (formatting.py).
        child(bubble, "msg-text").innerHTML = message.body_html || "";
      }
      chat.appendChild(bubble);
    }
    if (message.kind === "audio") {
      var spoken = message.direction === "in" ? message.transcription : message.body;
      if (spoken) {
        child(bubble, "transcription").textContent =
          message.direction === "in" ? "“" + spoken + "”" : "Texto falado: " + spoken;
      }
    }
    var meta = child(bubble, "meta");
    bubble.appendChild(meta);  // keep the time/status line last
    meta.textContent = timeOf(message.created_at) + " · " + (STATUS[message.status] || message.status) +
      (message.error ? " · " + message.error : "");
    return created;
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(poll, delay);
  }

  function poll() {
    fetch(pollUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); throw new Error("login"); }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        var added = false;
        data.messages.forEach(function (m) { added = upsert(m) || added; });
        typing.classList.toggle("d-none", !data.waiting);
        if (added) log.scrollTop = log.scrollHeight;
        schedule(data.waiting ? 700 : 3000);
      })
      .catch(function () { schedule(5000); });
  }

  audioInput.addEventListener("change", function () {
    var file = audioInput.files[0];
    fileLabel.textContent = file ? "Áudio selecionado: " + file.name + " (clique em Enviar)" : defaultFileLabel;
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    showError("");
    if (!textInput.value.trim() && !audioInput.files.length) {
      showError("Escreva uma mensagem ou escolha um áudio.");
      return;
    }
    sendButton.disabled = true;
    fetch(form.action, {
      method: "POST", body: new FormData(form), credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken() }
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) throw new Error(body.message || body.error || "Não foi possível enviar (HTTP " + response.status + ").");
        textInput.value = "";
        audioInput.value = "";
        fileLabel.textContent = defaultFileLabel;
        typing.classList.remove("d-none");
        schedule(0);
      });
    }).catch(function (error) {
      showError(error.message);
    }).then(function () {
      sendButton.disabled = false;
      textInput.focus();
    });
  });

  poll();
})();
