// Admin project form: show only the parameter fieldsets of the chosen strategy and extractor.
// Fieldsets carry classes "loupe-sp-<strategy>" / "loupe-ep-<extractor>" (annotate/admin.py).
(function () {
  function sync(select, prefix) {
    document.querySelectorAll(`fieldset.loupe-params[class*="loupe-${prefix}-"]`).forEach(function (fs) {
      const on = fs.classList.contains(`loupe-${prefix}-${select.value}`);
      fs.hidden = !on;
      fs.querySelectorAll("input, select, textarea").forEach(function (el) { el.disabled = !on; });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    [["id_strategy", "sp"], ["id_extractor", "ep"]].forEach(function ([id, prefix]) {
      const select = document.getElementById(id);
      if (!select) return;
      select.addEventListener("change", function () { sync(select, prefix); });
      sync(select, prefix);
    });
  });
})();
