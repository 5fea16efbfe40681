"""Reading requests: body fields, items (base64, data URLs, URLs fetched safely), TEI bodies."""
