"""The device's identity: enrollment, certificate renewal, and the HTTP calls both make."""
