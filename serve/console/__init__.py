"""The web console: server-rendered Jinja2 page shells and small ES modules, served by ``deeptrain serve`` at
``/`` on the API's own port.

Why this stack: a Python team reads and changes it without a JavaScript toolchain (nothing to build, nothing
to install: the templates and modules ship inside the package, and no page loads anything from another host).
The server renders each page's frame (navigation, headings, the forms' skeleton) from its path; the modules
then call the same public ``/v2`` routes any client calls, with the key the user signed in with — the console
has no private route and no privilege of its own. Interactive parts (the box editor, the live charts) are
plain DOM and SVG.

``pages.py`` maps paths to templates; ``templates/`` the pages; ``static/js/`` the modules (``api.js``: the
HTTP client and the key, ``ui.js``: DOM helpers and error display, ``pages/*.js``: one per page).
"""

from serve.console.pages import install

__all__ = ["install"]
