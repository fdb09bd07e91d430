/**
 * The web app's only script, served same-origin as `/web/app.js` (the
 * pages' CSP is `script-src 'self'`). It adds two things to pages that work
 * without it:
 *
 * - chart read-outs: hovering a chart, or focusing it and pressing the arrow
 *   keys (Home/End), moves a cursor and shows that epoch's values, read from
 *   the page's data table;
 * - live updates: while a model is not `trained`, an `EventSource` listens
 *   to `/models/<id>/events`; on each update it fetches `?part=live` and
 *   swaps that part in (keeping the data table's open state and the focused
 *   chart), and it closes when training ends.
 *
 * @module
 */

/** The script's source. */
export const CLIENT_JS: string = String.raw`"use strict";
(function () {
  var root = document.getElementById("live-root");
  if (!root) return;
  var table = null;

  function readTable() {
    var t = document.getElementById("metrics-table");
    var out = { epochs: [], rows: new Map(), cols: new Map() };
    if (!t) return out;
    var heads = t.tHead.rows[0].cells;
    for (var i = 1; i < heads.length; i++) out.cols.set(heads[i].getAttribute("data-key"), i);
    var rows = t.tBodies[0].rows;
    for (var r = 0; r < rows.length; r++) {
      var e = Number(rows[r].cells[0].textContent);
      out.epochs.push(e);
      out.rows.set(e, rows[r]);
    }
    return out;
  }

  function nearest(epochs, target) {
    var lo = 0, hi = epochs.length - 1;
    if (hi < 0) return undefined;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (epochs[mid] < target) lo = mid + 1; else hi = mid;
    }
    if (lo > 0 && Math.abs(epochs[lo - 1] - target) <= Math.abs(epochs[lo] - target)) lo--;
    return lo;
  }

  function geometry(svg) {
    return {
      e0: Number(svg.getAttribute("data-e0")), e1: Number(svg.getAttribute("data-e1")),
      x0: Number(svg.getAttribute("data-x0")), x1: Number(svg.getAttribute("data-x1")),
      keys: JSON.parse(svg.getAttribute("data-keys") || "[]")
    };
  }

  function show(svg, index) {
    if (!table) table = readTable();
    if (index === undefined || index < 0 || index >= table.epochs.length) return;
    var g = geometry(svg);
    var epoch = table.epochs[index];
    var x = g.x0 + (epoch - g.e0) / ((g.e1 - g.e0) || 1) * (g.x1 - g.x0);
    var cursor = svg.querySelector(".cursor");
    cursor.setAttribute("x1", String(x));
    cursor.setAttribute("x2", String(x));
    svg.classList.add("active");
    svg.dataset.index = String(index);
    var row = table.rows.get(epoch);
    var parts = [];
    for (var i = 0; i < g.keys.length; i++) {
      var col = table.cols.get(g.keys[i]);
      var text = col === undefined || !row ? "" : row.cells[col].textContent;
      parts.push(g.keys[i] + " " + (text === "" ? "–" : text));
    }
    var out = svg.parentNode.querySelector(".readout");
    if (out) out.textContent = "epoch " + epoch + ": " + parts.join(", ");
  }

  function hide(svg) {
    svg.classList.remove("active");
  }

  function fromPointer(svg, event) {
    if (!table) table = readTable();
    var g = geometry(svg);
    var rect = svg.getBoundingClientRect();
    var vx = (event.clientX - rect.left) / rect.width * svg.viewBox.baseVal.width;
    var epoch = g.e0 + (vx - g.x0) / ((g.x1 - g.x0) || 1) * (g.e1 - g.e0);
    show(svg, nearest(table.epochs, epoch));
  }

  root.addEventListener("pointermove", function (event) {
    var svg = event.target.closest && event.target.closest("svg[data-keys]");
    if (svg) fromPointer(svg, event);
  });
  root.addEventListener("pointerout", function (event) {
    var svg = event.target.closest && event.target.closest("svg[data-keys]");
    if (svg && !svg.contains(event.relatedTarget) && document.activeElement !== svg) hide(svg);
  });
  root.addEventListener("focusin", function (event) {
    var svg = event.target;
    if (svg.matches && svg.matches("svg[data-keys]")) {
      if (!table) table = readTable();
      show(svg, svg.dataset.index ? Number(svg.dataset.index) : table.epochs.length - 1);
    }
  });
  root.addEventListener("focusout", function (event) {
    if (event.target.matches && event.target.matches("svg[data-keys]")) hide(event.target);
  });
  root.addEventListener("keydown", function (event) {
    var svg = event.target;
    if (!svg.matches || !svg.matches("svg[data-keys]")) return;
    if (!table) table = readTable();
    var last = table.epochs.length - 1;
    var index = svg.dataset.index ? Number(svg.dataset.index) : last;
    var step = event.shiftKey ? 10 : 1;
    if (event.key === "ArrowLeft") index = Math.max(0, index - step);
    else if (event.key === "ArrowRight") index = Math.min(last, index + step);
    else if (event.key === "Home") index = 0;
    else if (event.key === "End") index = last;
    else return;
    event.preventDefault();
    show(svg, index);
  });

  var live = document.getElementById("live");
  if (!live || live.getAttribute("data-status") === "trained" || !window.EventSource) return;
  var source = new EventSource(root.getAttribute("data-events"));
  var fetching = false, pending = false;

  function refresh() {
    if (fetching) { pending = true; return; }
    fetching = true;
    fetch(root.getAttribute("data-part"), { credentials: "same-origin", headers: { accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (text) {
        var details = document.getElementById("data");
        var open = details ? details.open : false;
        var focused = document.activeElement && document.activeElement.closest
          ? document.activeElement.closest("figure.chart") : null;
        var focusId = focused ? focused.id : null;
        var doc = new DOMParser().parseFromString(text, "text/html");
        var next = doc.getElementById("live");
        if (!next) return;
        var current = document.getElementById("live");
        current.replaceWith(document.adoptNode(next));
        table = null;
        var d = document.getElementById("data");
        if (d && open) d.open = true;
        if (focusId) {
          var svg = document.querySelector("#" + focusId + " svg");
          if (svg) svg.focus();
        }
        if (next.getAttribute("data-status") === "trained") source.close();
      })
      .catch(function () { /* the next event retries */ })
      .then(function () {
        fetching = false;
        if (pending) { pending = false; refresh(); }
      });
  }

  source.addEventListener("update", function (event) {
    var state = JSON.parse(event.data);
    var current = document.getElementById("live");
    if (current && String(state.epochs) === current.getAttribute("data-epochs") &&
        state.status === current.getAttribute("data-status") &&
        String(state.updatedAt) === current.getAttribute("data-updated")) {
      if (state.status === "trained") source.close();
      return;
    }
    refresh();
  });
  source.addEventListener("gone", function () { source.close(); });
})();
`;
