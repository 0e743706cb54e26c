// Maestro web UI: a job's log, followed live. The page renders the log read
// so far (it works without this script); this script follows the job's log
// route as Server-Sent Events (event "line" per line, from the start of the
// log; "end" when the job has ended and every line is sent) and appends the
// lines the page does not have yet. Loaded as a file (script-src 'self').
"use strict";

(function () {
  var MAX_LINES = 5000; // lines kept in the page; older ones are dropped

  function start() {
    var region = document.getElementById("job-log");
    if (!region || !window.EventSource) {
      return;
    }
    var src = region.getAttribute("data-follow");
    if (!src) {
      return; // the job had ended when the page was rendered
    }
    var status = document.getElementById("job-log-status");
    var state = document.getElementById("job-state");
    // known: lines of the log the page has (rendered or appended); last:
    // the key of the newest of them. A follow sends the log from its
    // start, so each connection skips the first known lines, checking
    // that the last one skipped is the page's newest.
    var known = parseInt(region.getAttribute("data-count"), 10) || 0;
    var last = region.getAttribute("data-last") || "";
    var seen = 0;      // line events of this connection
    var skipped = [];  // the lines skipped on this connection (the newest MAX_LINES)
    var ended = false;

    function say(text) {
      if (status) {
        status.textContent = text;
      }
    }

    function key(l) {
      return l.attempt + " " + l.time + " " + l.stream;
    }

    function render(l) {
      var div = document.createElement("div");
      div.className = "ln ln-" + (l.stream === "stderr" ? "stderr" : "stdout");
      var meta = document.createElement("span");
      meta.className = "ln-meta";
      var t = typeof l.time === "string" ? l.time.substring(11, 23) : "";
      meta.textContent = "#" + l.attempt + " " + t;
      var text = document.createElement("span");
      text.className = "ln-text";
      text.textContent = l.text;
      div.appendChild(meta);
      div.appendChild(document.createTextNode(" "));
      div.appendChild(text);
      return div;
    }

    function append(lines) {
      var atBottom = region.scrollHeight - region.scrollTop - region.clientHeight < 8;
      var frag = document.createDocumentFragment();
      for (var i = 0; i < lines.length; i++) {
        frag.appendChild(render(lines[i]));
      }
      region.appendChild(frag);
      while (region.childElementCount > MAX_LINES) {
        region.removeChild(region.firstElementChild);
      }
      if (atBottom) {
        region.scrollTop = region.scrollHeight;
      }
    }

    // resync replaces the page's lines with this connection's: the log the
    // page showed is not a prefix of the one now sent (older lines aged
    // out of the log's retention).
    function resync(lines) {
      while (region.firstChild) {
        region.removeChild(region.firstChild);
      }
      append(lines);
    }

    var es = new EventSource(src);
    es.addEventListener("open", function () {
      seen = 0;
      skipped = [];
      say("Following the log live.");
    });
    es.addEventListener("line", function (ev) {
      var l;
      try {
        l = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      seen++;
      if (seen < known) {
        skipped.push(l);
        if (skipped.length > MAX_LINES) {
          skipped.shift();
        }
        return;
      }
      if (seen === known) {
        if (key(l) !== last) {
          skipped.push(l);
          resync(skipped.slice(-MAX_LINES));
        }
        skipped = [];
        return;
      }
      known = seen;
      last = key(l);
      append([l]);
    });
    es.addEventListener("end", function (ev) {
      ended = true;
      es.close();
      if (seen < known) {
        resync(skipped); // the log is shorter than the page's: show it as it is
        known = seen;
      }
      var end = {};
      try {
        end = JSON.parse(ev.data);
      } catch (e) {
        end = {};
      }
      if (state && end.state) {
        state.textContent = end.state;
        state.className = "state state-" + end.state;
      }
      var cancel = document.getElementById("job-cancel");
      if (cancel) {
        cancel.hidden = true;
      }
      say("The job has ended" + (end.state ? " (" + end.state + (end.reason ? ": " + end.reason : "") + ")" : "") + ".");
    });
    es.addEventListener("error", function (ev) {
      if (ended) {
        return;
      }
      if (ev.data) {
        // The server's error event: it ends the stream, and the browser
        // reconnects (reading the log from its start again).
        try {
          say(JSON.parse(ev.data).detail || "Reading the log failed; reconnecting.");
        } catch (e) {
          say("Reading the log failed; reconnecting.");
        }
        return;
      }
      if (es.readyState === EventSource.CLOSED) {
        say("Live updates stopped; reload the page to see new lines.");
      } else {
        say("Reconnecting to the log…");
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
