// Maestro web UI: the little script the pages need. Loaded as a file
// (script-src 'self'); nothing inline, no eval.
"use strict";

// htmx requests change state like forms do: they carry the session's CSRF
// token, from the meta tag, as a header.
document.addEventListener("htmx:configRequest", function (ev) {
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta) {
    ev.detail.headers["X-CSRF-Token"] = meta.getAttribute("content");
  }
});
