"""URLs that match no route: JSON in the common shape under /api/, HTML elsewhere."""


def test_unknown_api_url_is_json_404(client):
    response = client.get("/api/v1/no-such-resource/1,2")

    assert response.status_code == 404
    assert response.json() == {
        "error": {"status": 404, "code": "not_found", "message": "Not found."}
    }


def test_unknown_page_url_stays_html_404(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
