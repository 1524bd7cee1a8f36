"""authorization_headers: only the credential header of the SDK client goes into raw calls."""

from label_studio_sdk import LabelStudio

from integrations.labelstudio.auth import authorization_headers


def test_only_the_authorization_header_of_a_real_sdk_client_is_taken():
    # a legacy token needs no server round trip to build its header (a personal access token would)
    placeholder = "placeholder-for-this-test"  # no real credential: nothing is sent anywhere
    client = LabelStudio(base_url="http://127.0.0.1:1", api_key=placeholder)
    headers = authorization_headers(client)
    assert list(headers) == ["Authorization"]
    assert headers["Authorization"].endswith(placeholder)
