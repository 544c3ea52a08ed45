// Small enhancements for the user guide; every page works without them.
(function () {
  "use strict";

  // Copy buttons on code blocks.
  document.querySelectorAll("pre > code").forEach(function (code) {
    if (!navigator.clipboard) { return; }
    var button = document.createElement("button");
    button.type = "button";
    button.className = "copy-button";
    button.textContent = "Copy";
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(code.innerText).then(function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 1500);
      });
    });
    code.parentElement.appendChild(button);
  });

  // The search box has no backend in the static guide: send people to the FAQ instead.
  var search = document.querySelector(".search");
  if (search) {
    search.addEventListener("submit", function (event) {
      event.preventDefault();
      var brand = document.querySelector(".brand");
      window.location.href = new URL("faq.html", brand.href).href;
    });
  }
})();
