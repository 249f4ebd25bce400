"""The operator's and manager's command line over the API: ``/api/v1`` only.

``login``, ``passwd`` and ``devices`` (:mod:`.account`), ``session`` and
``exec`` (:mod:`.sessions`), ``connect`` (:mod:`.sockets`) and ``ssh``
(:mod:`.terminal`), all through the one typed client in :mod:`.api`. This
package imports nothing of the server but itself and :mod:`shared` (an
import-linter contract keeps it so), so that it runs where only
``pip install 'fieldlink[client]'`` is installed.
"""
