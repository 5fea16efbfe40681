// Photo tiles: a thumbnail fetched when it nears the screen, the date and the file
// name, a relevance bar for search results, and a clear state when the file is gone
// or changed since it was indexed.

import { blobUrl, fileStateOf } from "./api.js";
import { takenDate } from "./format.js";

// Tiles are about 200 CSS pixels: sharp on high-density screens too.
const THUMB_SIZE = window.devicePixelRatio > 1.5 ? 512 : 256;

export const FILE_STATES = {
  missing: "File missing",
  changed: "Changed on disk",
  unreadable: "Can't be read",
  error: "Not shown",
};

export function element(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
}

// Thumbnails of one result set: fetched as they near the screen, freed together.
export class Thumbnails {
  constructor() {
    this.urls = [];
    this.observer = new IntersectionObserver((entries) => this.#seen(entries), {
      rootMargin: "800px",
    });
  }

  watch(img) {
    this.observer.observe(img);
  }

  #seen(entries) {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      this.observer.unobserve(entry.target);
      this.#load(entry.target);
    }
  }

  async #load(img) {
    const tile = img.closest(".tile");
    try {
      const url = await blobUrl(img.dataset.src);
      this.urls.push(url);
      img.addEventListener("load", () => tile.classList.add("loaded"), { once: true });
      img.src = url;
    } catch (error) {
      markFileState(tile, fileStateOf(error), error.message);
    }
  }

  clear() {
    this.observer.disconnect();
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
  }
}

export function markFileState(tile, state, message) {
  tile.dataset.fileState = state;
  tile.classList.add("unavailable");
  const label = tile.querySelector(".file-state");
  label.textContent = FILE_STATES[state] || FILE_STATES.error;
  label.hidden = false;
  tile.querySelector(".thumb").title = message;
  for (const button of tile.querySelectorAll("button.similar")) button.disabled = true;
}

// relevance: 0..1 for search results (how close to the best), or null.
export function photoTile(photo, { thumbnails, onOpen, onSimilar, relevance = null }) {
  const date = takenDate(photo.takenAt);
  const img = element("img", { alt: `${photo.name}, ${date}`, decoding: "async" });
  img.dataset.src = `${photo.thumbnailUrl}?size=${THUMB_SIZE}`;
  thumbnails.watch(img);
  const open = element("button", { type: "button", className: "thumb", title: photo.path }, [
    img,
    element("span", { className: "file-state", hidden: true }),
  ]);
  open.setAttribute("aria-label", `Open ${photo.name}, ${date}`);
  open.addEventListener("click", () => onOpen(photo));
  if (relevance !== null) {
    const bar = element("span", { className: "relevance" });
    bar.style.setProperty("--relevance", String(Math.max(0.06, Math.min(1, relevance))));
    bar.setAttribute("aria-hidden", "true");
    open.append(bar);
  }
  const line = element("span", { className: "line" }, [
    element("span", { className: "date", textContent: date }),
  ]);
  if (onSimilar) {
    const similar = element("button", {
      type: "button", className: "similar quiet", textContent: "Similar",
    });
    similar.setAttribute("aria-label", `Photos similar to ${photo.name}`);
    similar.addEventListener("click", () => onSimilar(photo));
    line.append(similar);
  }
  const caption = element("figcaption", {}, [
    element("span", { className: "name", textContent: photo.name, title: photo.name }),
    line,
  ]);
  const tile = element("figure", { className: "tile" }, [open, caption]);
  tile.dataset.id = photo.id;
  if (photo.score !== undefined) tile.dataset.score = photo.score;
  return tile;
}

export function skeletons(count) {
  return Array.from({ length: count }, () => {
    const tile = element("div", { className: "skeleton" }, [
      element("div", { className: "thumb" }),
      element("div", { className: "line" }),
    ]);
    tile.setAttribute("aria-hidden", "true");
    return tile;
  });
}
