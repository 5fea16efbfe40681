// The photo viewer: the photo at full resolution (zoomable: fit, or 100% and dragged
// around), "n of N", arrow keys through the list, the details (path, size, camera,
// lens, exposure, place), and a clear message when the file is gone or changed.

import { api, blobUrl, fileStateOf } from "./api.js";
import { bytes, count, takenMoment, wrappablePath } from "./format.js";
import { element, FILE_STATES } from "./tiles.js";

// Browsers show these; HEIC and TIFF come as a large rendition the server makes.
const BROWSER_IMAGE_TYPES = new Set([
  "image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/avif",
]);
const FILE_MESSAGES = {
  missing: "This photo's file is no longer on disk.",
  changed: "This photo's file changed after it was indexed.",
  unreadable: "This photo's file cannot be read.",
};
const $ = (id) => document.getElementById(id);

export class Viewer {
  // list: {items: photos, total: number|null, more(): Promise<bool>}
  // on: {similar(photo), moved(photo), closed()}
  constructor(on) {
    this.on = on;
    this.list = null;
    this.index = -1;
    this.url = null;
    this.photo = null;
    this.dialog = $("viewer");
    this.figure = $("viewer-figure");
    this.image = $("viewer-image");
    this.#wire();
  }

  get isOpen() {
    return this.dialog.open;
  }

  show(list, index) {
    this.list = list;
    this.#open(index);
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  async #open(index) {
    const photo = this.list.items[index];
    if (!photo) return;
    this.index = index;
    this.photo = null;
    const dialog = this.dialog;
    dialog.dataset.id = photo.id;
    dialog.dataset.state = "loading";
    $("viewer-title").textContent = photo.name;
    $("viewer-meta").replaceChildren();
    this.#position();
    this.#message(null);
    this.#zoom(false);
    this.image.removeAttribute("src");
    this.image.alt = photo.name;
    for (const id of ["viewer-similar", "viewer-download", "viewer-zoom"]) $(id).disabled = true;
    if (!dialog.open) dialog.showModal();
    this.on.moved(photo);
    try {
      const detail = await (await api(`/api/photos/${photo.id}`)).json();
      if (this.index !== index || !dialog.open) return;
      this.photo = detail;
      this.#details(detail);
      if (detail.fileState !== "ok") {
        this.#unavailable(detail.fileState, detail.fileMessage);
        return;
      }
      const source = BROWSER_IMAGE_TYPES.has(detail.mimeType)
        ? detail.originalUrl
        : `${detail.thumbnailUrl}?size=4096`;
      const url = await blobUrl(source);
      if (this.index !== index || !dialog.open) {
        URL.revokeObjectURL(url);
        return;
      }
      this.#release();
      this.url = url;
      this.image.addEventListener("load", () => { dialog.dataset.state = "shown"; }, { once: true });
      this.image.src = url;
      $("viewer-similar").disabled = false;
      $("viewer-download").disabled = false;
      $("viewer-zoom").disabled = false;
    } catch (error) {
      if (this.index !== index) return;
      this.#unavailable(fileStateOf(error), error.message);
    }
  }

  #position() {
    const total = this.list.total ?? this.list.items.length;
    const more = this.list.total === null && this.list.hasMore ? "+" : "";
    $("viewer-position").textContent = `${count(this.index + 1)} of ${count(total)}${more}`;
    $("viewer-prev").disabled = this.index === 0;
    $("viewer-next").disabled = this.index + 1 >= total && !this.list.hasMore;
  }

  #details(photo) {
    const list = $("viewer-meta");
    const row = (label, value) => {
      if (value === null || value === undefined || value === "") return;
      const dd = element("dd");
      dd.append(value);
      list.append(element("dt", { textContent: label }), dd);
    };
    row("Taken", takenMoment(photo.takenAt));
    const pixels = photo.width ? `${photo.width} × ${photo.height} px, ` : "";
    row("Size", `${pixels}${bytes(photo.size)}`);
    row("Camera", photo.camera);
    row("Lens", photo.lens);
    row("Exposure", photo.exposure);
    if (photo.gps) row("Place", `${photo.gps.lat.toFixed(5)}, ${photo.gps.lon.toFixed(5)}`);
    const path = element("span", { className: "path" });
    path.append(wrappablePath(photo.path));
    row("Path", path);
  }

  #unavailable(state, detail) {
    this.dialog.dataset.state = state;
    this.#release();
    this.image.removeAttribute("src");
    this.#message(FILE_MESSAGES[state] || "This photo cannot be shown.", detail);
    $("viewer-similar").disabled = true;
    $("viewer-download").disabled = true;
    $("viewer-zoom").disabled = true;
  }

  #message(text, detail = "") {
    const box = $("viewer-message");
    box.hidden = !text;
    if (!text) return;
    box.replaceChildren(
      element("strong", { textContent: text }),
      element("p", { textContent: detail || "" }),
      element("p", { textContent: "Run handspring photos index to bring the index up to date." }),
    );
  }

  #release() {
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
  }

  async step(delta) {
    const next = this.index + delta;
    if (next < 0) return;
    if (next >= this.list.items.length) {
      if (!this.list.hasMore || !(await this.list.more())) return;
    }
    this.#open(next);
  }

  #zoom(on) {
    this.figure.classList.toggle("zoomed", on);
    $("viewer-zoom").setAttribute("aria-pressed", String(on));
    $("viewer-zoom").textContent = on ? "Fit to window" : "Zoom to 100%";
  }

  #toggleZoom(event) {
    if (!this.image.getAttribute("src") || this.dialog.dataset.state !== "shown") return;
    const on = !this.figure.classList.contains("zoomed");
    const box = this.image.getBoundingClientRect();
    // The point under the pointer (or the middle) stays where it is.
    const fx = event ? (event.clientX - box.left) / box.width : 0.5;
    const fy = event ? (event.clientY - box.top) / box.height : 0.5;
    this.#zoom(on);
    if (on) {
      const figure = this.figure;
      figure.scrollLeft = fx * this.image.naturalWidth - figure.clientWidth / 2;
      figure.scrollTop = fy * this.image.naturalHeight - figure.clientHeight / 2;
    }
  }

  async #download() {
    const photo = this.photo;
    if (!photo) return;
    try {
      const url = await blobUrl(photo.originalUrl);
      const link = element("a", { href: url, download: photo.name });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error) {
      this.#unavailable(fileStateOf(error), error.message);
    }
  }

  #wire() {
    $("viewer-close").addEventListener("click", () => this.close());
    $("viewer-prev").addEventListener("click", () => this.step(-1));
    $("viewer-next").addEventListener("click", () => this.step(1));
    $("viewer-download").addEventListener("click", () => this.#download());
    $("viewer-zoom").addEventListener("click", () => this.#toggleZoom(null));
    this.image.addEventListener("dblclick", (event) => this.#toggleZoom(event));
    $("viewer-similar").addEventListener("click", () => {
      if (this.photo) this.on.similar(this.photo);
    });
    this.dialog.addEventListener("close", () => {
      this.index = -1;
      this.#release();
      this.image.removeAttribute("src");
      this.#zoom(false);
      this.on.closed();
    });
    this.dialog.addEventListener("keydown", (event) => {
      if (event.key === "ArrowLeft") this.step(-1);
      else if (event.key === "ArrowRight") this.step(1);
      else if (event.key === "z" && !event.ctrlKey && !event.metaKey) this.#toggleZoom(null);
    });
    // Clicking the backdrop (the dialog box itself, outside its content) closes it.
    this.dialog.addEventListener("click", (event) => {
      if (event.target === this.dialog) this.close();
    });
    this.#dragToPan();
  }

  #dragToPan() {
    const figure = this.figure;
    let start = null;
    figure.addEventListener("pointerdown", (event) => {
      if (!figure.classList.contains("zoomed")) return;
      start = { x: event.clientX, y: event.clientY, left: figure.scrollLeft, top: figure.scrollTop };
      figure.setPointerCapture(event.pointerId);
    });
    figure.addEventListener("pointermove", (event) => {
      if (!start) return;
      figure.scrollLeft = start.left - (event.clientX - start.x);
      figure.scrollTop = start.top - (event.clientY - start.y);
    });
    const stop = () => { start = null; };
    figure.addEventListener("pointerup", stop);
    figure.addEventListener("pointercancel", stop);
  }
}

export { FILE_STATES };
