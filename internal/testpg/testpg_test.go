package testpg

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestDatabasesAreIsolated(t *testing.T) {
	for _, name := range []string{"a", "b", "c"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, Database(t))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			// Would fail with "already exists" if databases were shared.
			if _, err := conn.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDatabaseDroppedOnCleanup(t *testing.T) {
	ctx := context.Background()
	var url string
	t.Run("inner", func(t *testing.T) {
		url = Database(t)
		// Left open on purpose: WITH (FORCE) must still drop it.
		if _, err := pgx.Connect(ctx, url); err != nil {
			t.Fatal(err)
		}
	})
	if conn, err := pgx.Connect(ctx, url); err == nil {
		conn.Close(ctx)
		t.Fatal("database still exists after cleanup")
	}
}
