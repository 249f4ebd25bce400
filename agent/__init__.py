"""The fieldlink agent: reports device health over MQTT and opens remote sessions on request."""
