"""What the server and the remote client agree on: Clarifai's status codes (``codes``), free of both."""
