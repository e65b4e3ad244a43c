/** The dashboard's consumer groups: members, progress, lag and unacked events, at page load. */
import type { GroupSummary } from "../../lib/fanout/groups.ts";

const short = (id: string) => `…${id.slice(-8)}`;

/** Nothing when the account has no group, so the page stays as it was for everyone else. */
export function GroupsTable(props: { groups: GroupSummary[] }) {
  const { groups } = props;
  if (groups.length === 0) return null;
  return (
    <section class="card" aria-labelledby="groups-title" data-testid="groups">
      <h2 id="groups-title">Consumer groups</h2>
      <p class="muted">
        Each event goes to one member of a group; reload the page to refresh. Also at{" "}
        <code>GET /api/groups</code>.
      </p>
      <div class="table-wrap">
        <table aria-label="Consumer groups">
          <thead>
            <tr>
              <th scope="col">Group</th>
              <th scope="col">Members</th>
              <th scope="col">Done up to</th>
              <th scope="col">Lag</th>
              <th scope="col">Unacked</th>
            </tr>
          </thead>
          <tbody>
            {groups.map((group) => (
              <tr key={group.name} data-group={group.name}>
                <td>
                  <code>{group.name}</code>
                </td>
                <td>
                  {group.members.length === 0
                    ? <span class="muted">none connected</span>
                    : (
                      <ul class="group-members">
                        {group.members.map((member) => (
                          <li key={member.id}>
                            <code title={member.id}>{member.id.slice(0, 8)}</code>{" "}
                            {member.transport === "ws" ? "WebSocket" : "SSE"}
                            {member.inFlight
                              ? (
                                <>
                                  , handling{" "}
                                  <code title={member.inFlight}>{short(member.inFlight)}</code>
                                </>
                              )
                              : ", idle"}
                          </li>
                        ))}
                      </ul>
                    )}
                </td>
                <td>
                  {group.cursor
                    ? <code title={group.cursor}>{short(group.cursor)}</code>
                    : <span class="muted">nothing yet</span>}
                </td>
                <td>{group.lag}{group.lagCapped ? "+" : ""}</td>
                <td>{group.unacked}{group.unackedCapped ? "+" : ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
