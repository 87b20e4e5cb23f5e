"""One migrated template test DB, cloned for each worker slot (PYTEST_DONT_REWRITE).

Under xdist, pytest-django has each worker create and migrate its own ``test_<db>_gwK``.
Here the zygote, before its first fork, creates and migrates ``test_<db>`` (pytest-django's
name without xdist; --reuse-db/--create-db/--nomigrations as it honours them) and, before
forking each slot, clones it into ``test_<db>_gwK`` (PostgreSQL ``CREATE DATABASE ...
TEMPLATE`` through Django's ``_clone_test_db``, SQLite a file copy), as Django's parallel
runner does. In the worker, pytest-django's ``django_db_setup`` only points the connections
at the slot's clone and, without --reuse-db, drops it at the end as its teardown does. The
names stay pytest-django's: --reuse-db keeps the same DBs with and without shardex.

When the user overrides ``django_db_setup`` (or a fixture that decides how the test DBs are
made or named), the backend is neither PostgreSQL nor a SQLite file, or preparing the
template fails, each worker sets up its own DB as before (one ``note`` says why).
"""

from __future__ import annotations

import os
import shutil
import sys

# What pytest-django's own fixtures are defined in: any other definition is the user's.
_PYTEST_DJANGO = "pytest_django.fixtures"
# Fixtures that decide how the test DBs are made and named: overriding any of them keeps
# pytest-django's per-worker setup (the zygote cannot run the user's fixture).
_FIXTURES = (
    "django_db_setup",
    "django_db_keepdb",
    "django_db_createdb",
    "django_db_use_migrations",
    *(f"django_db_modify_db_settings{suffix}" for suffix in ("", "_parallel_suffix", "_xdist_suffix", "_tox_suffix")),
)


class _Off(Exception):
    """No template for this run; the message (if any) becomes a note."""


class Template:
    """One unique test DB: the template the zygote migrated and what each slot gets."""

    def __init__(self, alias: str, vendor: str, settings_dict: dict) -> None:
        self.alias, self.vendor = alias, vendor
        # A copy of the connection's settings with NAME = the template's name.
        self.settings, self.name = settings_dict, settings_dict["NAME"]
        self.fingerprint = None

    def slot_name(self, slot: str) -> str:
        # pytest-django's _set_suffix_to_test_databases: "<test name>_<workerid>".
        return f"{self.name}_{slot}"


class TemplateDb:
    """The zygote's side: prepares the templates once, clones one per slot it forks, drops
    them at the end (without --reuse-db)."""

    def __init__(self, plugin, session) -> None:
        self.plugin, self.session = plugin, session
        self.prepared = False
        self.templates: list[Template] = []
        self.cloned: set[str] = set()  # slots whose clone is ready (kept for a respawn)
        self.templates_left: list[Template] = []
        config = plugin.config
        django = _has_django(config)
        self.keepdb = django and bool(config.getvalue("reuse_db"))
        self.createdb = django and bool(config.getvalue("create_db"))
        # pytest-django's verbosity for Django's creation messages (-v prints them).
        self.verbosity = max(0, int(config.option.verbose or 0))

    def before_fork(self, slot: str, worker_count: int) -> None:
        if not self.prepared:
            self.prepared = True
            try:
                self.templates = self._prepare(worker_count)
                self.templates_left = list(self.templates)  # not dropped yet
            except _Off as off:
                if str(off):
                    self.plugin.note(str(off))
            except Exception as error:
                why = _short(error)
                self.plugin.note(f"preparing the template test DB failed ({why}): each worker sets up its own")
            finally:
                _close_all()
        if self.templates and slot not in self.cloned:
            try:
                with _unblocked(self.plugin.config):
                    for template in self.templates:
                        self._clone(template, slot)
                self.cloned.add(slot)
            except (Exception, SystemExit) as error:
                why = _short(error)
                self.plugin.note(f"cloning the template test DB for {slot} failed ({why}): it sets up its own")
            finally:
                _close_all()

    def after_forks(self, worker_count: int) -> None:
        """Without --reuse-db, the templates go as soon as every slot has its clone (a
        respawned worker reuses its slot's): dropped while the tests run, not after them."""
        if self.keepdb or not self.templates or len(self.cloned) < worker_count:
            return
        self._drop_templates()

    def _drop_templates(self) -> None:
        templates, self.templates_left = self.templates_left, []
        try:
            with _unblocked(self.plugin.config):
                for template in templates:
                    _drop(template, template.name)
        except Exception as error:
            self.plugin.note(f"dropping the template test DB failed: {_short(error)}")
        finally:
            _close_all()

    def in_worker(self, slot: str) -> None:
        """In the forked worker: its django_db_setup points at the slot's clone."""
        if slot in self.cloned:
            _replace_setup(self.session, {t.alias: t.slot_name(slot) for t in self.templates})

    def finish(self, alive: set) -> None:
        """The zygote's end: without --reuse-db, the templates and the clones no worker
        dropped (a worker that crashed) are dropped, as pytest-django's teardown would."""
        if self.keepdb or not self.templates:
            return
        try:
            with _unblocked(self.plugin.config):
                for template in self.templates:
                    for slot in sorted(self.cloned - alive):
                        _drop(template, template.slot_name(slot))
        except Exception as error:
            self.plugin.note(f"dropping a clone of the template test DB failed: {_short(error)}")
        finally:
            _close_all()
        self._drop_templates()

    def _prepare(self, worker_count: int) -> list:
        config = self.plugin.config
        if not _has_django(config) or worker_count < 2 or len(self.session.items) < 2:
            raise _Off("")
        from django.conf import settings
        from pytest_django import fixtures

        if not settings.configured:
            raise _Off("")
        # What pytest-django's django_db_setup sets up: the aliases the session's tests use
        # (the django_db marker requests the DB at run time, so not every such test has
        # django_db_setup in its fixture closure).
        aliases, _ = fixtures._get_databases_for_setup(self.session.items)
        if not aliases:
            raise _Off("")
        overridden = _overridden(self.session, self.session.items)
        if overridden is not None:
            name, where = overridden
            raise _Off(
                f"{name} is overridden in {where}: each worker sets up its own test DB "
                "(shardex migrates one template and clones it only under pytest-django's own)"
            )
        with _unblocked(config):
            return self._create_templates(settings, fixtures, aliases)

    def _create_templates(self, settings, fixtures, aliases) -> list:
        from django.db import connections
        from django.test.utils import get_unique_databases_and_mirrors, setup_databases

        unique, _ = get_unique_databases_and_mirrors(aliases)
        for _, group in unique.values():
            creation = connections[group[0]].creation
            vendor = creation.connection.vendor
            if vendor == "sqlite" and creation.is_in_memory_db(creation._get_test_db_name()):
                raise _Off("")  # each worker migrates its own in-memory DB, as before
            if vendor not in ("postgresql", "sqlite"):
                raise _Off(
                    f"the test DB of alias {group[0]!r} ({vendor}) is set up by each worker: "
                    "shardex clones a template test DB for PostgreSQL and SQLite files only"
                )
        saved = _save_names(settings, connections)
        if self.plugin.config.getvalue("nomigrations"):
            fixtures._disable_migrations()
        tox = os.getenv("TOX_PARALLEL_ENV")
        if tox:
            fixtures._set_suffix_to_test_databases(suffix=tox)
        try:
            old_config = setup_databases(
                verbosity=self.verbosity,
                interactive=False,
                keepdb=self.keepdb and not self.createdb,
                aliases=aliases,
                serialized_aliases=set(),
            )
            templates = []
            for connection, _, created in old_config:
                if created:
                    template = Template(connection.alias, connection.vendor, dict(connection.settings_dict))
                    if self.keepdb:
                        template.fingerprint = _fingerprint(template, template.name)
                    templates.append(template)
            return templates
        except (Exception, SystemExit) as error:  # Django's creation code exits on errors
            why = _short(error)
            raise _Off(f"creating the template test DB failed ({why}): each worker sets up its own") from error
        finally:
            _close_all()
            _restore_names(settings, connections, saved)

    def _clone(self, template: Template, slot: str) -> None:
        target = template.slot_name(slot)
        # --reuse-db keeps a slot's DB as pytest-django does; one whose migrations differ
        # from the template's (the template just migrated) is cloned again.
        reusable = self.keepdb and not self.createdb and template.fingerprint is not None
        if reusable and _fingerprint(template, target) == template.fingerprint:
            return
        if template.vendor == "sqlite":
            if os.path.exists(target):
                os.remove(target)
            shutil.copyfile(template.name, target)
            return
        wrapper = _wrapper(template, template.name)
        try:
            if wrapper.creation.get_test_db_clone_settings(slot)["NAME"] != target:
                raise RuntimeError(f"Django names the clone differently from pytest-django ({target})")
            wrapper.creation._clone_test_db(slot, self.verbosity, keepdb=False)
        finally:
            wrapper.close()


def _has_django(config) -> bool:
    return config.pluginmanager.hasplugin("django") and "django" in sys.modules


def _short(error) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[0] if text else type(error).__name__


def _unblocked(config):
    """pytest-django blocks DB access outside its fixtures."""
    from pytest_django.plugin import blocking_manager_key

    return config.stash[blocking_manager_key].unblock()


def _close_all() -> None:
    # A DB connection must not cross a fork, and PostgreSQL clones only a template nobody
    # is connected to.
    django_db = sys.modules.get("django.db")
    if django_db is None:
        return
    for connection in django_db.connections.all(initialized_only=True):
        try:
            connection.close()
            getattr(connection, "close_pool", lambda: None)()
        except Exception:
            pass


def _save_names(settings, connections) -> dict:
    """Every alias's NAME and TEST settings, which setup_databases changes: the workers
    inherit them as they were (pytest-django derives the slot's name from them)."""
    saved = {}
    for alias in connections:
        settings_dict = connections[alias].settings_dict
        saved[alias] = (settings.DATABASES[alias].get("NAME"), settings_dict.get("NAME"), dict(settings_dict["TEST"]))
    return saved


def _restore_names(settings, connections, saved) -> None:
    for alias, (configured, name, test) in saved.items():
        settings.DATABASES[alias]["NAME"] = configured
        settings_dict = connections[alias].settings_dict
        settings_dict["NAME"] = name
        settings_dict["TEST"].clear()
        settings_dict["TEST"].update(test)


def _wrapper(template: Template, name: str):
    """A connection of its own to database `name` (the zygote's are left alone)."""
    from django.db import connections

    backend = type(connections[template.alias])
    # No connection pool (Django 5.1's OPTIONS["pool"]): its threads would cross the fork.
    options = {key: value for key, value in template.settings.get("OPTIONS", {}).items() if key != "pool"}
    return backend({**template.settings, "NAME": name, "OPTIONS": options}, template.alias)


def _fingerprint(template: Template, name: str):
    """What decides whether a kept clone is current: the migrations applied and the tables
    (--nomigrations creates tables without recording migrations). None when unreadable."""
    if template.vendor == "sqlite" and not os.path.exists(name):
        return None
    wrapper = _wrapper(template, name)
    try:
        with wrapper.cursor() as cursor:
            tables = wrapper.introspection.table_names(cursor)
            applied = []
            if "django_migrations" in tables:
                cursor.execute("SELECT app, name FROM django_migrations ORDER BY app, name")
                applied = [tuple(row) for row in cursor.fetchall()]
        return (tuple(sorted(tables)), tuple(applied))
    except Exception:
        return None
    finally:
        wrapper.close()


def _drop(template: Template, name: str) -> None:
    if template.vendor == "sqlite":
        if os.path.exists(name):
            os.remove(name)
        return
    wrapper = _wrapper(template, name)
    try:
        with wrapper.creation._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {wrapper.ops.quote_name(name)}")
    finally:
        wrapper.close()


def _visible_defs(session, items, name: str):
    """The definitions of fixture `name` each item sees, least specific first (the last is
    the one pytest runs), once per parent node (a module or class: its items see the same)."""
    manager = session._fixturemanager
    seen = set()
    for item in items:
        key = id(getattr(item, "parent", None) or item)
        if key in seen:
            continue
        seen.add(key)
        try:
            defs = manager.getfixturedefs(name, item)
        except TypeError:  # pytest < 8.1 takes the node id
            defs = manager.getfixturedefs(name, item.nodeid)
        if defs:
            yield defs


def _overridden(session, items):
    """(fixture, where) for the first fixture of _FIXTURES that an item sees defined
    outside pytest-django (a conftest, a plugin, a test module); None if none is."""
    for name in _FIXTURES:
        for defs in _visible_defs(session, items, name):
            if getattr(defs[-1].func, "__module__", None) != _PYTEST_DJANGO:
                return name, _where(defs[-1])
    return None


def _where(fixturedef) -> str:
    code = getattr(fixturedef.func, "__code__", None)
    if code is None:
        return fixturedef.baseid or "a plugin"
    return f"{os.path.relpath(code.co_filename)}:{code.co_firstlineno}"


def _replace_setup(session, names: dict) -> None:
    """Swaps the function of pytest-django's django_db_setup FixtureDef for one that uses
    the slot's clone. A fixture registered now would not do: each collected item resolved
    its fixtures at collection (its closure's FixtureDefs), so the definition pytest runs
    is the one found then. The user's own override was ruled out before cloning."""
    seen = set()
    for defs in _visible_defs(session, session.items, "django_db_setup"):
        for fixturedef in defs:
            if id(fixturedef) in seen or getattr(fixturedef.func, "__module__", None) != _PYTEST_DJANGO:
                continue
            seen.add(id(fixturedef))
            fixturedef.func = _clone_setup(fixturedef.func, names)


def _clone_setup(original, names: dict):
    def django_db_setup(**kwargs):
        request = kwargs["request"]
        blocker = kwargs["django_db_blocker"]
        verbosity = request.config.option.verbose
        from pytest_django.fixtures import _get_databases_for_setup

        aliases, serialized = _get_databases_for_setup(request.session.items)
        with blocker.unblock():
            db_cfg = _use_clones(aliases, serialized, names)
        if db_cfg is None:
            # The settings name another DB than the one cloned: pytest-django's own setup.
            yield from original(**kwargs)
            return
        yield
        if not kwargs["django_db_keepdb"]:
            import pytest
            from django.test.utils import teardown_databases

            with blocker.unblock():
                try:
                    teardown_databases(db_cfg, verbosity=verbosity)
                except Exception as exc:
                    request.node.warn(pytest.PytestWarning(f"Error when trying to teardown test databases: {exc!r}"))

    return django_db_setup


def _use_clones(aliases, serialized_aliases, names: dict):
    """Django's setup_databases with each DB's creation replaced by pointing the
    connection at the slot's clone (as setup_worker_connection does). Returns what
    teardown_databases takes, or None when a DB's name is not the clone's."""
    from django.conf import settings
    from django.db import connections
    from django.test.utils import get_unique_databases_and_mirrors

    test_databases, mirrored_aliases = get_unique_databases_and_mirrors(aliases)
    firsts = [group[0] for _, group in test_databases.values()]
    if any(connections[alias].creation._get_test_db_name() != names.get(alias) for alias in firsts):
        return None
    old_names, serialize = [], []
    for db_name, group in test_databases.values():
        first = connections[group[0]]
        for alias in group:
            connection = connections[alias]
            old_names.append((connection, db_name, connection is first))
            if connection is first:
                clone = names[alias]
                connection.close()
                settings.DATABASES[alias]["NAME"] = clone
                connection.settings_dict["NAME"] = clone
                if alias in serialized_aliases:
                    serialize.append(connection)
            else:
                connection.creation.set_as_test_mirror(first.settings_dict)
    for alias, mirror_alias in mirrored_aliases.items():
        connections[alias].creation.set_as_test_mirror(connections[mirror_alias].settings_dict)
    for connection in serialize:
        connection._test_serialized_contents = connection.creation.serialize_db_to_string()
    return old_names
