/* The transcript page keeps itself current: every few seconds it asks the server for the
 * conversation's fingerprint; when it changed (a new message, a delivery status, the handoff
 * opened or closed) the page reloads — unless the operator is typing a reply or has chosen a
 * file, in which case a notice offers the refresh instead, so no draft is lost. */
(function () {
  "use strict";

  var chat = document.getElementById("transcript");
  if (!chat) return;
  var url = chat.getAttribute("data-state-url");
  var known = chat.getAttribute("data-state");
  var notice = document.getElementById("transcript-stale");
  var text = document.getElementById("reply-text");
  var file = document.getElementById("reply-file");

  function drafting() {
    return (text && text.value.trim() !== "") || (file && file.files && file.files.length > 0) ||
      document.activeElement === text;
  }

  function poll() {
    if (document.hidden) return;
    fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data || data.state === known) return;
        if (drafting()) {
          if (notice) notice.classList.remove("d-none");
        } else {
          window.location.reload();
        }
      })
      .catch(function () { /* the next poll tries again */ });
  }

  window.setInterval(poll, 5000);
})();
