// Zoom and pan of one image inside a frame: wheel zooms at the pointer, drag pans, double-click fits.
//
//   const z = new ZoomPan(frameEl, imgEl, {onChange: (scale) => ...});
//   z.zoomBy(1.25); z.reset();   // reset() on every new item
//
// A CSS transform on the image only: the layout around it never changes size.
const MIN = 1, MAX = 12;

export class ZoomPan {
  constructor(frame, img, {onChange} = {}) {
    this.frame = frame;
    this.img = img;
    this.onChange = onChange || (() => {});
    this.reset();
    frame.addEventListener("wheel", (e) => {
      if (img.hidden) return;
      e.preventDefault();
      this.zoomBy(e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX, e.clientY);
    }, {passive: false});
    frame.addEventListener("pointerdown", (e) => {
      if (this.scale === 1 || e.button !== 0) return;
      this.drag = {x: e.clientX - this.tx, y: e.clientY - this.ty};
      frame.setPointerCapture(e.pointerId);
      frame.classList.add("panning");
    });
    frame.addEventListener("pointermove", (e) => {
      if (!this.drag) return;
      this.tx = e.clientX - this.drag.x;
      this.ty = e.clientY - this.drag.y;
      this.apply();
    });
    const end = () => { this.drag = null; frame.classList.remove("panning"); };
    frame.addEventListener("pointerup", end);
    frame.addEventListener("pointercancel", end);
    frame.addEventListener("dblclick", () => this.reset());
  }

  // Zoom by `factor` keeping the point (cx, cy) (client coordinates; default the centre) in place.
  zoomBy(factor, cx, cy) {
    const next = Math.min(MAX, Math.max(MIN, this.scale * factor));
    const r = this.frame.getBoundingClientRect();
    const px = (cx ?? r.left + r.width / 2) - (r.left + r.width / 2);
    const py = (cy ?? r.top + r.height / 2) - (r.top + r.height / 2);
    const k = next / this.scale;
    this.tx = px - (px - this.tx) * k;
    this.ty = py - (py - this.ty) * k;
    this.scale = next;
    if (next === MIN) { this.tx = 0; this.ty = 0; }
    this.apply();
  }

  reset() {
    this.scale = 1; this.tx = 0; this.ty = 0; this.drag = null;
    this.apply();
  }

  apply() {
    this.img.style.transform = `translate(${this.tx}px, ${this.ty}px) scale(${this.scale})`;
    this.frame.dataset.zoom = this.scale.toFixed(2);
    this.onChange(this.scale);
  }
}
