// imgwatch web page: drag-and-drop search through the JSON API; everything else is plain HTML.
"use strict";
document.documentElement.classList.add("js");

// A thumbnail that cannot be made shows "cannot show" instead of a broken image.
document.addEventListener("error", (event) => {
  const target = event.target;
  if (target instanceof HTMLImageElement) {
    const tile = target.closest(".tile");
    if (tile) tile.classList.add("broken");
  }
}, true);

function setupThreshold() {
  const select = document.getElementById("threshold");
  if (select) select.addEventListener("change", () => select.form.submit());
}

function setupSearch() {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("file");
  const drop = document.getElementById("drop");
  const top = document.getElementById("top");
  const message = document.getElementById("message");
  const section = document.getElementById("result-section");
  const title = document.getElementById("result-title");
  const grid = document.getElementById("results");
  const preview = document.getElementById("query-preview");
  const template = document.getElementById("tile-template");
  const keptEnd = Number(template.dataset.keptEnd);
  const leftOut = document.getElementById("left-out");  // the photo itself, when it is indexed
  const leftOutNames = document.getElementById("left-out-names");
  const maxBytes = Number(form.dataset.maxBytes);
  let lastFile = null;

  function say(text, kind) {
    message.textContent = text;
    message.className = "message" + (kind ? " " + kind : "");
  }

  function tile(item) {
    const node = template.content.firstElementChild.cloneNode(true);
    node.href = item.photo;
    node.title = item.path;
    node.dataset.path = item.path;
    const img = node.querySelector("img");
    img.src = item.thumbnail;
    img.alt = item.name;
    node.querySelector(".score").textContent = item.score.toFixed(4);
    const [start, end] = nameEnds(item.name);
    node.querySelector(".name-start").textContent = start;
    node.querySelector(".name-end").textContent = end;
    return node;
  }

  // display.name_ends: the last keptEnd characters are shown whole (an accent stays with its letter).
  function nameEnds(name) {
    const chars = [...name];
    let cut = Math.max(0, chars.length - keptEnd);
    while (cut > 0 && /\p{M}/u.test(chars[cut])) cut -= 1;
    return [chars.slice(0, cut).join(""), chars.slice(cut).join("")];
  }

  async function search(file) {
    if (!file) return;
    lastFile = file;
    if (file.size > maxBytes) {
      say(`${file.name} is ${(file.size / 1048576).toFixed(1)} MiB; the limit is ${(maxBytes / 1048576).toFixed(1)} MiB.`, "error");
      return;
    }
    say(`Searching with ${file.name}…`, "busy");
    const body = new FormData();
    body.append("image", file, file.name);
    let response, data;
    try {
      response = await fetch(`/api/search?top=${encodeURIComponent(top.value)}`, { method: "POST", body });
      data = await response.json();
    } catch (error) {
      say(response && response.status === 413 ? "The photo is too large." : `The search failed: ${error.message}`, "error");
      return;
    }
    if (!response.ok) {
      say(data.error || `The search failed (HTTP ${response.status}).`, "error");
      return;
    }
    preview.replaceChildren();
    const img = document.createElement("img");
    img.src = URL.createObjectURL(file);
    img.alt = "the query";
    preview.append(img);
    title.textContent = `${data.results.length} most similar to `;
    const name = document.createElement("span");
    name.className = "query-name";
    name.textContent = file.name;
    title.append(name);
    grid.replaceChildren(...data.results.map(tile));
    leftOutNames.replaceChildren(...data.query.left_out.flatMap((item, index) => {
      const link = document.createElement("a");
      link.href = item.photo;
      link.title = item.path;
      link.textContent = item.name;
      return index ? [", ", link] : [link];
    }));
    leftOut.hidden = !data.query.left_out.length;
    section.hidden = false;
    say(data.results.length ? "" : "Nothing is indexed yet.");
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search(input.files[0]);
  });
  input.addEventListener("change", () => search(input.files[0]));
  top.addEventListener("change", () => {
    const params = new URLSearchParams(location.search);
    if (lastFile) {
      search(lastFile);
    } else if (params.get("path")) {  // a search by path: ask again with the new count
      params.set("top", top.value);
      location.search = params.toString();
    }
  });
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) search(file);
  });
  // Dropping anywhere on the page searches too, instead of the browser opening the file.
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    if (drop.contains(event.target)) return;
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) search(file);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupSearch();
  setupThreshold();
});
