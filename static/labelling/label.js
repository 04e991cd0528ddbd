// The labelling page: vote without page loads, keyboard, undo, skip, zoom / contrast (the
// server's astropy stretches), first-visit tutorial (a modal dialog). One request per
// classification: the vote's answer carries the next subject, and the page keeps a small queue
// of subjects held for it (images preloaded), so the next image is up as soon as the vote is
// stored. Subjects the page will not show (when the volunteer leaves, or an undo pushes the
// queue past its size) are given back at once rather than held until their timeout.
// Single-key shortcuts can be turned off (WCAG 2.1.4); the choice is kept in localStorage.
// Without JavaScript the form still posts and reloads.
(() => {
  "use strict";
  const root = document.getElementById("labeller");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const image = $("radio");
  const form = $("vote-form");
  const choices = [...document.querySelectorAll(".choice")];
  const feedback = $("feedback");
  const undoButton = $("undo");
  const undoWindowMs = Number(root.dataset.undoWindow) * 1000;
  const sourceData = $("current-source");
  let current = sourceData ? JSON.parse(sourceData.textContent) : null;
  const QUEUE_SIZE = 3; // subjects held ahead of the one shown
  const queue = []; // the next sources, their images already requested
  let busy = false;
  let undoTimer = null;
  const stretchButton = $("stretch");
  const stretches = stretchButton.dataset.stretches.split(" "); // the first is the stored default
  let stretch = 0;
  let zoom = 1;

  const post = (url, data) =>
    fetch(url, {
      method: "POST",
      headers: { "X-CSRFToken": root.dataset.csrf },
      body: new URLSearchParams(data || {}),
      credentials: "same-origin",
    });

  const sexagesimal = (deg, hours) => {
    const sign = deg < 0 ? "-" : hours ? "" : "+";
    let v = Math.abs(deg) / (hours ? 15 : 1);
    const a = Math.floor(v); v = (v - a) * 60;
    const b = Math.floor(v); const c = (v - b) * 60;
    const pad = (x, n) => String(x).padStart(n, "0");
    return `${sign}${pad(a, 2)}${hours ? "h" : "°"}${pad(b, 2)}${hours ? "m" : "′"}${c.toFixed(hours ? 1 : 0).padStart(hours ? 4 : 2, "0")}${hours ? "s" : "″"}`;
  };

  const feedbackImage = $("feedback-image");

  // `about`: the source a message is about (gold feedback arrives after the next image is
  // shown, so its own thumbnail goes beside the words).
  function say(text, kind, about) {
    feedback.textContent = text || "";
    feedback.className = kind || "";
    feedbackImage.hidden = !about;
    if (about) {
      feedbackImage.src = about.thumbnail;
      feedbackImage.alt = `The source this is about: ${about.name}`;
      feedbackImage.dataset.source = about.id;
    } else {
      feedbackImage.removeAttribute("src");
      delete feedbackImage.dataset.source;
    }
  }

  // The image in the chosen stretch; the default is the stored thumbnail, cached by the browser.
  const thumbnailUrl = (source) =>
    stretch ? `${source.thumbnail}?stretch=${encodeURIComponent(stretches[stretch])}` : source.thumbnail;

  function show(source) {
    current = source;
    noteHeld();
    if (!source) {
      document.querySelector(".viewer").hidden = true;
      $("done").hidden = false;
      return;
    }
    document.querySelector(".viewer").hidden = false;
    $("done").hidden = true;
    image.src = thumbnailUrl(source);
    $("source-id").value = source.id;
    $("flag-source").value = source.id;
    $("flag-status").textContent = "";
    $("flag-box").open = false;
    $("source-name").textContent = source.name;
    $("source-position").textContent =
      source.ra_deg == null ? "" : `RA ${sexagesimal(source.ra_deg, true)}, Dec ${sexagesimal(source.dec_deg, false)}`;
    $("source-size").textContent = source.angular_size_arcsec ? `· ${source.angular_size_arcsec.toFixed(0)}″ across` : "";
    setZoom(1);
  }

  // Ids the page holds: the server serves none of them again as `next`.
  const held = () => [current, ...queue].filter(Boolean).map((source) => source.id);

  // What the page holds, on its root element (data-held: the shown subject's id, then the queue's).
  const noteHeld = () => (root.dataset.held = held().join(" "));

  function enqueue(source) {
    if (!source || held().includes(source.id)) return;
    queue.push(source);
    noteHeld();
    new Image().src = thumbnailUrl(source); // warm the browser cache
  }

  // Give back what the page holds beyond its queue (after an undo put a subject in front).
  function trimQueue() {
    const extra = queue.splice(QUEUE_SIZE);
    noteHeld();
    if (extra.length) post(root.dataset.release, extra.map((source) => ["source", source.id]));
  }

  // Top the queue up to its size with `next` requests (on load, and when an answer had none).
  let filling = null;
  function fill() {
    if (filling) return filling;
    filling = (async () => {
      try {
        while (queue.length < QUEUE_SIZE) {
          const params = new URLSearchParams(held().map((id) => ["exclude", id]));
          const response = await fetch(`${root.dataset.next}?${params}`, { credentials: "same-origin" });
          if (!response.ok) return;
          const source = (await response.json()).source;
          if (!source || held().includes(source.id)) return; // nothing more to hold
          enqueue(source);
        }
      } catch (error) {
        /* offline for now: the queue fills on the next answer */
      } finally {
        filling = null;
      }
    })();
    return filling;
  }

  // Show the next queued subject; `next`: the one the last answer brought (joins the queue's end).
  async function advance(next) {
    if (next !== undefined) enqueue(next);
    if (!queue.length) await fill();
    show(queue.shift() || null);
    if (next === undefined) topUp(); // an answer with `next` (even none) spares a request ...
    else if (filling) filling.then(topUp); // ... unless a fill under way may stop short on it
  }

  // Fill the queue if it is short, also when a fill already under way ends short: its answer
  // may have been the subject an answer's `next` brought meanwhile (then it stops at a duplicate).
  function topUp() {
    if (queue.length >= QUEUE_SIZE) return;
    if (filling) filling.then(topUp);
    else fill();
  }

  function setBusy(value) {
    busy = value;
    choices.forEach((button) => (button.disabled = value));
  }

  async function vote(label) {
    if (busy || !current) return;
    setBusy(true);
    try {
      const response = await post(root.dataset.vote, [
        ["source", current.id], ["label", label], ...held().map((id) => ["exclude", id]),
      ]);
      const body = await response.json();
      if (!response.ok) {
        say(body.error || "That vote could not be recorded.", "error");
        if (response.status === 400) await advance(body.next); // e.g. retired meanwhile: move on
        return;
      }
      if (body.created) $("votes-cast").textContent = Number($("votes-cast").textContent) + 1;
      if (body.gold) say(body.gold_message, body.gold.correct ? "gold-right" : "gold-wrong", body.gold_source);
      else say("");
      armUndo();
      await advance(body.next);
    } catch (error) {
      say("Connection problem: your vote was not sent. Try again.", "error");
    } finally {
      setBusy(false);
    }
  }

  function armUndo() {
    undoButton.disabled = false;
    clearTimeout(undoTimer);
    undoTimer = setTimeout(() => (undoButton.disabled = true), undoWindowMs);
  }

  async function undo() {
    if (undoButton.disabled || busy) return;
    setBusy(true);
    try {
      const response = await post(root.dataset.undo);
      const body = await response.json();
      if (!response.ok) { say(body.error, "error"); return; }
      undoButton.disabled = true;
      $("votes-cast").textContent = Math.max(0, Number($("votes-cast").textContent) - 1);
      // The shown subject goes back to the front of the queue (still held); the queue keeps its size.
      if (current) queue.unshift(current);
      trimQueue();
      show(body.source);
      say("Vote undone: answer again.");
    } finally {
      setBusy(false);
    }
  }

  async function skip() {
    if (busy || !current) return;
    const skipped = current;
    say("");
    const answer = post(root.dataset.skip, [["source", skipped.id], ...held().map((id) => ["exclude", id])]);
    if (queue.length) {
      show(queue.shift()); // no waiting: the next image is already here
      answer.then((response) => response.json()).then((body) => enqueue(body.next)).catch(() => fill());
      return;
    }
    try {
      await advance((await (await answer).json()).next);
    } catch (error) {
      await advance();
    }
  }

  // Leaving the page: give back every subject it held but the volunteer did not answer.
  window.addEventListener("pagehide", () => {
    const ids = held();
    if (!ids.length) return;
    const form = new URLSearchParams(ids.map((id) => ["source", id]));
    form.append("leaving", "1");
    form.append("csrfmiddlewaretoken", root.dataset.csrf);
    navigator.sendBeacon(root.dataset.release, form);
  });

  function setZoom(value) {
    zoom = value;
    image.style.transform = `scale(${zoom})`;
    $("zoom").textContent = `Zoom ${zoom}×`;
  }

  function cycleStretch() {
    stretch = (stretch + 1) % stretches.length;
    stretchButton.textContent = `Contrast: ${stretches[stretch]}`;
    if (current) image.src = thumbnailUrl(current);
    queue.forEach((source) => (new Image().src = thumbnailUrl(source))); // warm the queue in this stretch too
  }

  // Single-key shortcuts: on unless turned off; never while typing in a field.
  const shortcuts = $("shortcuts");
  const SHORTCUTS_KEY = "rgzlabel.shortcuts";
  try {
    shortcuts.checked = localStorage.getItem(SHORTCUTS_KEY) !== "off";
  } catch (error) {
    shortcuts.checked = true; // storage blocked: the default, not remembered
  }
  shortcuts.addEventListener("change", () => {
    try {
      localStorage.setItem(SHORTCUTS_KEY, shortcuts.checked ? "on" : "off");
    } catch (error) {
      /* storage blocked: the switch still holds for this page */
    }
  });
  const typing = (target) =>
    target instanceof Element && Boolean(target.closest("input, textarea, select, [contenteditable]:not([contenteditable=false])"));

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const label = event.submitter && event.submitter.value;
    if (label) vote(label);
  });
  $("flag-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!current) return;
    const status = $("flag-status");
    try {
      const response = await post($("flag-form").dataset.api, { source: current.id, note: $("flag-note").value });
      const body = await response.json();
      status.className = response.ok ? "" : "error";
      status.textContent = response.ok ? `Flagged ${current.name}: thank you!` : body.error;
      if (response.ok) $("flag-note").value = "";
    } catch (error) {
      status.className = "error";
      status.textContent = "Connection problem: the flag was not sent. Try again.";
    }
  });
  $("skip").addEventListener("click", skip);
  undoButton.addEventListener("click", undo);
  $("zoom").addEventListener("click", () => setZoom(zoom >= 3 ? 1 : zoom + 1));
  $("stretch").addEventListener("click", cycleStretch);
  document.addEventListener("keydown", (event) => {
    if (!shortcuts.checked || typing(event.target) || event.isComposing) return;
    if (event.metaKey || event.ctrlKey || event.altKey || tutorial.open) return;
    const index = Number.parseInt(event.key, 10) - 1;
    if (index >= 0 && index < choices.length) { event.preventDefault(); vote(choices[index].value); }
    else if (event.key === "ArrowRight") { event.preventDefault(); skip(); }
    else if (event.key === "ArrowLeft") { event.preventDefault(); undo(); }
    else if (event.key === "z" || event.key === "Z") setZoom(zoom >= 3 ? 1 : zoom + 1);
    else if (event.key === "s" || event.key === "S") cycleStretch();
  });

  // The tutorial: a modal dialog, opened on the first visit (recorded as seen on the server
  // when closed) and from the Tutorial button. Focus moves into it; Escape, Close or the last
  // Next close it, and focus goes back where it was (or to the image on a first visit).
  const tutorial = $("tutorial");
  const steps = [...tutorial.querySelectorAll(".step")];
  const nextButton = $("tutorial-next");
  let step = 0;
  let returnFocus = null;
  let recordSeen = false;

  function showStep(index) {
    step = index;
    steps.forEach((element, i) => (element.hidden = i !== step));
    tutorial.setAttribute("aria-describedby", steps[step].id);
    $("tutorial-count").textContent = `Step ${step + 1} of ${steps.length}`;
    nextButton.textContent = step === steps.length - 1 ? "Start labelling" : "Next";
  }

  function openTutorial(firstVisit) {
    const active = document.activeElement;
    returnFocus = active && active !== document.body ? active : null;
    recordSeen = firstVisit;
    showStep(0);
    tutorial.showModal();
    nextButton.focus();
  }

  tutorial.addEventListener("close", () => {
    if (recordSeen) post(root.dataset.tutorial);
    recordSeen = false;
    const fallback = current ? document.querySelector(".viewer") : $("done");
    (returnFocus && returnFocus.isConnected ? returnFocus : fallback).focus();
  });
  // Tab and Shift+Tab cycle inside the dialog rather than leaving it for the browser's toolbar.
  tutorial.addEventListener("keydown", (event) => {
    if (event.key !== "Tab") return;
    const stops = [...tutorial.querySelectorAll("button, [href], input, [tabindex]:not([tabindex='-1'])")].filter(
      (element) => !element.disabled && element.checkVisibility(),
    );
    const first = stops[0];
    const last = stops[stops.length - 1];
    if (event.shiftKey && document.activeElement === first) { event.preventDefault(); last.focus(); }
    else if (!event.shiftKey && document.activeElement === last) { event.preventDefault(); first.focus(); }
  });
  nextButton.addEventListener("click", () => (step < steps.length - 1 ? showStep(step + 1) : tutorial.close()));
  $("tutorial-close").addEventListener("click", () => tutorial.close());
  $("tutorial-open").addEventListener("click", () => openTutorial(false));

  show(current);
  if (current) fill();
  if (root.dataset.firstVisit === "1") openTutorial(true);
})();
