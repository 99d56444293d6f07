// The API reference page: Swagger UI (vendored) over /api/v1/openapi.json.
window.addEventListener("DOMContentLoaded", function () {
  var element = document.getElementById("api-reference");
  window.SwaggerUIBundle({
    url: element.dataset.openapiUrl,
    domNode: element,
    deepLinking: true,
    persistAuthorization: false,
  });
});
