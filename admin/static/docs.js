// The interactive /docs page: Swagger UI (vendored in ./swagger-ui, no CDN) over /v1/openapi.json.
window.onload = function () {
  window.ui = SwaggerUIBundle({ url: "/v1/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
};
