from pathlib import Path

import pytest

from pipeline.extract import Document, Section, extract_document

URL = "https://docs.example.com/guide/rate-limits.html"
POSTGRES_DOCS = Path("/usr/share/doc/postgresql-doc-15/html")


def sections_by_path(document: Document) -> dict[tuple[str, ...], str]:
    return {section.heading_path: section.text for section in document.sections}


PAGE_WITH_CHROME = """<!DOCTYPE html>
<html><head><title>Rate limits — Example Docs</title>
<style>.x { color: red }</style><script>var leaked = "script text";</script></head>
<body class="sidebar-layout">
  <a class="skip-link" href="#main">Skip to content</a>
  <header><a href="/">Example Docs logo</a><nav><ul><li><a href="/">Home nav</a></li></ul></nav></header>
  <div class="sidebar"><p>Sidebar links</p></div>
  <div id="toc"><ul><li>TOC entry</li></ul></div>
  <div class="breadcrumbs">Docs / Guide</div>
  <main class="content-with-menu-sidebar">
    <h1>Rate limits<a class="headerlink" href="#rate-limits" title="Permalink">¶</a></h1>
    <p>Requests are   limited
       per&nbsp;key.</p>
    <noscript>Enable JavaScript</noscript>
    <template><p>Template text</p></template>
    <form><label>Search</label><input name="q"><button>Go</button></form>
    <iframe src="/ad"></iframe>
    <svg><text>svg text</text></svg>
    <aside><p>Aside note</p></aside>
    <div role="navigation">Role nav</div>
    <div class="toctree-wrapper compound"><ul><li><a href="a.html">Toctree link</a></li></ul></div>
    <p>Choose <span class="guimenu">File</span> &gt; <span class="menuselection">Save</span>.</p>
    <!-- an HTML comment -->
    <p>Body text stays.</p>
  </main>
  <footer><p>Copyright footer</p></footer>
</body></html>"""


def test_chrome_is_removed_and_main_content_kept():
    document = extract_document(PAGE_WITH_CHROME, URL)
    text = document.text
    assert "Requests are limited per key." in text
    assert "Body text stays." in text
    assert "Choose File > Save." in text
    for chrome in [
        "Skip to content",
        "logo",
        "Home nav",
        "Sidebar links",
        "TOC entry",
        "Docs / Guide",
        "¶",
        "Enable JavaScript",
        "Template text",
        "Search",
        "Go",
        "svg text",
        "Aside note",
        "Role nav",
        "Toctree link",
        "an HTML comment",
        "Copyright footer",
        "script text",
        "color: red",
    ]:
        assert chrome not in text, chrome
    # <main> is used even though its own class and the body's class name sidebars.
    assert document.title == "Rate limits"
    assert document.sections == (
        Section(("Rate limits",), "Requests are limited per key.\n\nChoose File > Save.\n\nBody text stays."),
    )


def test_heading_paths_follow_heading_levels_and_ignore_inline_markup():
    html = """<body><p>Before any heading.</p>
    <h1>Guide</h1><p>g</p>
    <h2>Install <code>pkg</code> <a href="#x">now</a></h2><p>i</p>
    <h3>On Linux</h3><p>l</p>
    <h3>On macOS</h3><p>m</p>
    <h2>Use</h2><p>u</p>
    <h4>Deep jump</h4><p>d</p>
    <h2>Empty section</h2>
    <h2></h2><p>still under Use?</p>
    </body>"""
    document = extract_document(html, URL)
    assert [(s.heading_path, s.text) for s in document.sections] == [
        ((), "Before any heading."),
        (("Guide",), "g"),
        (("Guide", "Install pkg now"), "i"),
        (("Guide", "Install pkg now", "On Linux"), "l"),
        (("Guide", "Install pkg now", "On macOS"), "m"),
        (("Guide", "Use"), "u"),
        (("Guide", "Use", "Deep jump"), "d"),
        # An empty heading opens nothing; the empty section is skipped.
        (("Guide", "Empty section"), "still under Use?"),
    ]


def test_docbook_nested_divs_and_admonitions():
    html = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
    <html xmlns="http://www.w3.org/1999/xhtml"><head><title>11.8. Partial Indexes</title></head>
    <body id="docContent"><div class="navheader"><table><tr><td><a href="p.html">Prev</a></td></tr></table></div>
    <div class="sect1"><div class="titlepage"><div><div><h2 class="title">11.8. Partial Indexes</h2></div></div></div>
    <p>Intro.</p>
    <div class="note"><h3 class="title">Note</h3><p>A boxed note.</p></div>
    <p>After the note.</p>
    <div class="sect2"><div class="titlepage"><div><div><h3 class="title">11.8.1. Examples</h3></div></div></div>
    <p>Example text.</p></div></div>
    <div class="navfooter"><table><tr><td>Next page</td></tr></table></div></body></html>"""
    document = extract_document(html, URL)
    assert document.title == "11.8. Partial Indexes"  # no <h1>: falls back to <title>
    assert sections_by_path(document) == {
        ("11.8. Partial Indexes",): "Intro.\n\nNote\n\nA boxed note.\n\nAfter the note.",
        ("11.8. Partial Indexes", "11.8.1. Examples"): "Example text.",
    }
    assert "Prev" not in document.text and "Next page" not in document.text


def test_code_blocks_keep_whitespace_and_inline_code_stays_inline():
    html = """<main><p>Call <code>connect()</code> first.</p>
    <div class="highlight"><pre><span class="k">def</span> <span class="nf">f</span>(x):
    <span class="k">if</span> x:

\treturn  x  * 2<br>tail</pre></div></main>"""
    document = extract_document(html, URL)
    assert document.sections[0].text == ("Call connect() first.\n\ndef f(x):\n    if x:\n\n\treturn  x  * 2\ntail")


def test_tables_and_lists_render_as_lines():
    html = """<article>
    <table><caption>Limits</caption>
      <thead><tr><th>Plan</th><th>Requests</th></tr></thead>
      <tbody><tr><td>Free</td><td>10 / <b>min</b></td></tr>
      <tr><td>Pro</td><td><table><tr><td>100</td><td>burst</td></tr></table></td></tr>
      <tr><td></td><td></td></tr></tbody></table>
    <ul><li>First</li><li><p>Second</p><ol><li>Nested</li></ol></li></ul>
    <dl><dt>term</dt><dd>definition</dd></dl>
    </article>"""
    document = extract_document(html, URL)
    assert document.text == (
        "Limits\nPlan | Requests\nFree | 10 / min\nPro | 100 | burst"
        "\n\n- First\n- Second\n  - Nested"
        "\n\nterm\n\ndefinition"
    )


def test_article_header_is_content_but_page_header_is_chrome():
    html = """<body><header><p>Site banner</p></header>
    <article><header><h1>Post title</h1><p>Lede.</p></header><p>Body.</p><footer>Edit this page</footer></article>
    </body>"""
    document = extract_document(html, URL)
    assert document.title == "Post title"
    assert document.sections == (Section(("Post title",), "Lede.\n\nBody."),)


def test_hidden_elements_are_dropped():
    html = """<main><p>visible</p><p hidden>hidden attr</p><div style="display: none">display none</div>
    <span aria-hidden="true">aria hidden</span><p style="visibility:hidden">invisible</p></main>"""
    assert extract_document(html, URL).text == "visible"


def test_title_fallbacks():
    assert extract_document("<title> Page  title </title><p>x</p>", URL).title == "Page title"
    assert extract_document("<p>x</p>", URL).title == "rate-limits"
    assert extract_document("<p>x</p>", "https://docs.example.com/").title == "docs.example.com"


def test_broken_html_and_odd_input():
    broken = "<div><p>unclosed <b>bold <i>italic<p>next<table><tr><td>a<td>b</table><h2>Head</h2>after"
    document = extract_document(broken, URL)
    assert sections_by_path(document) == {(): "unclosed bold italic\n\nnext\n\na | b", ("Head",): "after"}
    only_pre = extract_document("<pre>  x = 1\n\n  y = 2\n</pre>", URL)
    assert only_pre.text == "  x = 1\n\n  y = 2"
    entities = extract_document("<p>a<![CDATA[ cdata ]]>b &lt;tag&gt; &amp; &eacute;&#8212;&nbsp;x</p>", URL)
    assert entities.text == "ab <tag> & é— x"
    assert extract_document("", URL).sections == ()
    deep = "<div>" * 5000 + "deep text"
    assert extract_document(deep, URL).text == "deep text"


def test_layout_table_keeps_headings_and_code():
    html = """<body><table><tr><td><h1>Title</h1><p>intro</p><h2>Part</h2>
    <table class="highlighttable"><tr><td class="linenos"><pre>1\n2</pre></td>
    <td class="code"><pre>a = 1\nb = 2</pre></td></tr></table></td></tr></table></body>"""
    assert sections_by_path(extract_document(html, URL)) == {("Title",): "intro", ("Title", "Part"): "a = 1\nb = 2"}


def test_content_hash_is_stable_and_sensitive():
    html = "<h1>T</h1><p>one</p><h2>S</h2><p>two</p>"
    first = extract_document(html, URL)
    assert first.content_hash() == extract_document(html, "https://elsewhere.example/").content_hash()
    assert first.content_hash() != extract_document(html.replace("two", "three"), URL).content_hash()
    assert first.content_hash() != extract_document(html.replace("<h2>S", "<h2>X"), URL).content_hash()
    assert len(first.content_hash()) == 64


def test_real_postgresql_reference_page():
    html = (POSTGRES_DOCS / "sql-createindex.html").read_text(encoding="utf-8")
    document = extract_document(html, "https://www.postgresql.org/docs/15/sql-createindex.html")
    assert document.title == "CREATE INDEX"
    paths = sections_by_path(document)
    description = next(text for path, text in paths.items() if "Description" in path)
    assert description.startswith("CREATE INDEX constructs an index on the specified column(s)")
    synopsis = paths[("Synopsis",)]
    assert synopsis.startswith("CREATE [ UNIQUE ] INDEX [ CONCURRENTLY ] [ [ IF NOT EXISTS ] name ]")
    assert "\n    [ INCLUDE ( column_name [, ...] ) ]\n" in synopsis
    assert ("Parameters", "Index Storage Parameters") in paths
    # The DocBook navigation header/footer (Prev / Up / Home links) is chrome.
    assert "PostgreSQL 15.20 Documentation" not in document.text
    assert "CREATE GROUP" not in document.text


@pytest.mark.parametrize("name", ["indexes-partial.html", "functions-math.html", "bookindex.html"])
def test_real_postgresql_pages_extract(name):
    document = extract_document((POSTGRES_DOCS / name).read_text(encoding="utf-8"), f"https://pg/{name}")
    assert document.sections and all(section.text.strip() for section in document.sections)
    assert "Prev" not in document.text.splitlines()
