// The web console's one script (pxe_server/http_ui.py): it keeps a page's host rows up to
// date by polling /ui/api/fleet every two seconds with the highest event id it has seen,
// and applies the rows the server sends. Text goes in through textContent only, never as
// markup. A failed poll is reported on the console (console.error) and on the page.
"use strict";

(() => {
  const live = document.querySelector("[data-poll]");
  if (!live) {
    return;
  }
  const INTERVAL = 2000; // milliseconds between polls
  const FULL_EVERY = 30; // polls between two full reads (hosts removed or renamed)
  const pattern = document.getElementById("row-template");
  const status = document.getElementById("live-status");
  const shown = document.getElementById("shown");
  const body = live.querySelector("tbody");
  let cursor = Number(live.dataset.cursor) || 0;
  let polls = 0;
  let leaving = false; // a poll cut short by leaving the page is no failure
  window.addEventListener("pagehide", () => {
    leaving = true;
  });
  window.addEventListener("pageshow", () => {
    leaving = false;
  });

  const rows = () => Array.from(live.querySelectorAll("[data-mac]"));

  function apply(element, data) {
    element.dataset.mac = data.mac;
    element.dataset.key = data.key;
    element.classList.forEach((name) => {
      if (name.startsWith("state-")) {
        element.classList.remove(name);
      }
    });
    element.classList.add(`state-${data.state}`);
    element.querySelectorAll("[data-field]").forEach((field) => {
      const name = field.dataset.field;
      if (name === "progress") {
        field.hidden = data.progress === null;
        if (data.progress !== null) {
          field.value = data.progress;
        }
      } else if (name === "link") {
        field.textContent = data.label;
        field.href = `/ui/hosts/${encodeURIComponent(data.mac)}`;
      } else if (Object.hasOwn(data, name)) {
        const text = data[name] === null ? "" : String(data[name]);
        if (field.textContent !== text) {
          field.textContent = text;
        }
      }
    });
  }

  // A paged fleet: a changed host not shown is placed only where its order falls among
  // the rows this page shows (page 1 from the top); the full read every minute puts every
  // page right again.
  const page = Number(live.dataset.page) || 1;
  const pageRows = Number(live.dataset.pageRows) || 0;

  function belongs(data) {
    if (!pageRows) {
      return true;
    }
    const keys = rows().map((row) => row.dataset.key).sort();
    if (page > 1 && (keys.length === 0 || data.key < keys[0])) {
      return false;
    }
    return keys.length < pageRows || data.key < keys[keys.length - 1];
  }

  function trim() {
    if (pageRows && body) {
      rows().slice(pageRows).forEach((row) => row.remove());
    }
  }

  function added(data) {
    if (!pattern || !body || !belongs(data)) {
      return;
    }
    const row = pattern.content.firstElementChild.cloneNode(true);
    apply(row, data);
    body.appendChild(row);
  }

  function sort() {
    if (!body || live.dataset.sorted !== "yes") {
      return;
    }
    const now = rows();
    const wanted = [...now].sort((a, b) => (a.dataset.key < b.dataset.key ? -1 : a.dataset.key > b.dataset.key ? 1 : 0));
    if (wanted.some((row, i) => row !== now[i])) {
      wanted.forEach((row) => body.appendChild(row));
    }
  }

  function update(reply) {
    const seen = new Set();
    const byMac = new Map(rows().map((row) => [row.dataset.mac, row]));
    reply.rows.forEach((data) => {
      seen.add(data.mac);
      const row = byMac.get(data.mac);
      if (row) {
        apply(row, data);
      } else {
        added(data);
      }
    });
    const gone = new Set(reply.removed);
    if (pattern) {
      rows().forEach((row) => {
        if (gone.has(row.dataset.mac) || (reply.full && !seen.has(row.dataset.mac))) {
          row.remove();
        }
      });
    }
    sort();
    trim();
    cursor = reply.cursor;
    if (shown) {
      shown.textContent = String(rows().length);
    }
    if (status) {
      status.textContent = `Live, as of ${reply.at}.`;
      status.classList.remove("lost");
    }
  }

  function failed(why) {
    if (leaving) {
      return;
    }
    console.error(`netinstall: the page could not be updated: ${why}`);
    if (status) {
      status.textContent = `Not updated: ${why}.`;
      status.classList.add("lost");
    }
  }

  async function poll() {
    polls += 1;
    const full = polls % FULL_EVERY === 0;
    const url = new URL(live.dataset.poll, window.location.href);
    url.searchParams.set("cursor", String(cursor));
    if (full) {
      url.searchParams.set("full", "1");
    }
    try {
      const reply = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (reply.status === 401) {
        window.location.assign(`/ui/login?next=${encodeURIComponent(window.location.pathname + window.location.search)}`);
        return;
      }
      if (!reply.ok) {
        failed(`the server answered ${reply.status}`);
      } else {
        update(await reply.json());
      }
    } catch (error) {
      failed(String(error));
    }
    window.setTimeout(poll, INTERVAL);
  }

  window.setTimeout(poll, INTERVAL);
})();
